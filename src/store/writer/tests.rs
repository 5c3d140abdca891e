use super::*;
use crate::receipt::tests::sample;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    (dir, store)
}

fn id(i: usize) -> String {
    format!("0190a5f0-0000-7000-8000-{i:012}")
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_committers_form_one_chain() {
    let (_dir, store) = store().await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    let mut tasks = Vec::new();
    for t in 0..50 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in 0..40 {
                let c = writer.commit(sample(&id(t * 40 + k))).await.unwrap();
                out.push(c);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    handle.shutdown().await;

    all.sort_by_key(|c| c.seq);
    let seqs: Vec<i64> = all.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
    let report = store.verify_chain().await.unwrap();
    assert_eq!(report.checked, 2000);
    assert!(report.first_bad.is_none(), "{report:?}");

    // Each answer names the stored row.
    let last = store.list_receipts(&Default::default()).await.unwrap();
    assert_eq!(last[0].seq, 2000);
    assert_eq!(last[0].hash, all[1999].hash);

    // Batching happened: 2,000 receipts took fewer transactions.
    let stats = writer.stats();
    assert_eq!(stats.receipts, 2000);
    assert!(stats.largest_batch > 1, "{stats:?}");
    assert!(stats.batches < 2000, "{stats:?}");
}

#[tokio::test]
async fn shutdown_writes_everything_queued_then_refuses() {
    let (_dir, store) = store().await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    // Queue directly, so every receipt is in the channel before shutdown.
    let mut answers = Vec::new();
    for i in 0..1000 {
        let (reply, answer) = oneshot::channel();
        let job = Job::Receipt(Box::new(Prepared::new(sample(&id(i)))), reply);
        writer.queue.send(Queued { job, _permit: None }).unwrap();
        answers.push(answer);
    }
    handle.shutdown().await;
    for answer in answers {
        answer.await.unwrap().unwrap();
    }
    let err = writer.commit(sample(&id(5000))).await.unwrap_err();
    assert!(matches!(err, StoreError::WriterStopped), "{err}");
    let err = writer.intent(&sample(&id(5001))).await.unwrap_err();
    assert!(matches!(err, StoreError::WriterStopped), "{err}");
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (1000, None));
    // The writer unregistered.
    assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_writes_nothing_and_the_next_one_starts_fresh() {
    let (_dir, store) = store().await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    writer.commit(sample(&id(0))).await.unwrap();

    // Receipt 50 reuses id 0, so its whole batch must fail.
    let mut tasks = Vec::new();
    for i in 1..=100 {
        let writer = writer.clone();
        let rid = if i == 50 { id(0) } else { id(i) };
        tasks.push(tokio::spawn(
            async move { writer.commit(sample(&rid)).await },
        ));
    }
    let mut ok = 1;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e, StoreError::Unrecorded { .. }), "{e}");
                assert!(
                    e.to_string().starts_with("cannot record the receipt: "),
                    "{e}"
                );
                assert!(!e.to_string().contains("alice"), "{e}");
            }
        }
    }
    assert!(ok < 101, "the duplicate id was accepted");
    // A receipt refused for its content says nothing about the storage.
    assert!(writer.healthy());
    writer.commit(sample(&id(1000))).await.unwrap();
    handle.shutdown().await;

    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (ok + 1, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    // Two stores on one file behave like two tollgate processes.
    let a = Store::open(&path).await.unwrap();
    let b = Store::open(&path).await.unwrap();
    let (wa, ha) = ReceiptWriter::spawn(&a);
    let (wb, hb) = ReceiptWriter::spawn(&b);
    let mut tasks = Vec::new();
    for t in 0..20 {
        let w = if t % 2 == 0 { wa.clone() } else { wb.clone() };
        tasks.push(tokio::spawn(async move {
            for k in 0..25 {
                w.commit(sample(&id(t * 25 + k))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ha.shutdown().await;
    hb.shutdown().await;
    let report = a.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (500, None));
}

#[tokio::test]
async fn an_intent_then_its_commit_leaves_no_intent() {
    let (_dir, store) = store().await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    let r = sample(&id(1));
    writer.intent(&r).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 1);
    let stored: String = sqlx::query_scalar("SELECT receipt FROM intents")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let stored: NewReceipt = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored.outcome, Outcome::Interrupted);
    assert_eq!(stored.reason.as_deref(), Some(INTERRUPTED_REASON));
    assert_eq!((stored.id.as_str(), &stored.args), (r.id.as_str(), &r.args));

    writer.commit(r).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
    // Receipts without an intent commit as before.
    writer.commit(sample(&id(2))).await.unwrap();
    handle.shutdown().await;
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (2, None));
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM receipts")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(outcomes, ["ok", "ok"]);
}

/// A writer that recorded intents for `ids` and then "died" where this
/// host cannot see its lock (another host): its heartbeat is made stale
/// and its lock file removed, so its intents are orphans by the
/// heartbeat rule.
async fn orphans(store: &Store, ids: std::ops::Range<usize>) {
    let slow = WriterOptions {
        heartbeat: Duration::from_secs(3600),
        ..Default::default()
    };
    let (writer, handle) = ReceiptWriter::spawn_with(store, slow);
    for i in ids {
        writer.intent(&sample(&id(i))).await.unwrap();
    }
    // Freeze it as a crash would: no shutdown, no further heartbeat.
    std::mem::forget(handle);
    std::mem::forget(writer);
    sqlx::query("UPDATE writers SET heartbeat = 0")
        .execute(store.pool())
        .await
        .unwrap();
    for (_, file) in liveness::lock_files(store.path()) {
        std::fs::remove_file(file).unwrap();
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// What a writer killed on this host leaves behind: its row with a fresh
/// heartbeat, its intents for `ids`, and its lock file (with `boot` as
/// the boot id) that nobody holds any more.
async fn killed_writer(store: &Store, boot: &str, ids: std::ops::Range<usize>) -> PathBuf {
    let owner = uuid::Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO writers (owner, pid, started_at, heartbeat) VALUES (?, 1, 'x', ?)")
        .bind(&owner)
        .bind(unix_ms())
        .execute(store.pool())
        .await
        .unwrap();
    for i in ids {
        sqlx::query("INSERT INTO intents (id, created_at, receipt, owner) VALUES (?, ?, ?, ?)")
            .bind(id(i))
            .bind(now_ts())
            .bind(intent_json(&sample(&id(i))).unwrap())
            .bind(&owner)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let mut name = store.path().file_name().unwrap().to_owned();
    name.push(format!(".writer-{owner}.lock"));
    let lock = store.path().with_file_name(name);
    std::fs::write(&lock, format!("boot_id {boot}\npid 1\n")).unwrap();
    lock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writers_intents_are_recovered_at_start_on_the_same_host() {
    let Some(boot) = boot_id() else {
        eprintln!("skipped: no boot id on this system");
        return;
    };
    let (_dir, store) = store().await;
    let lock = killed_writer(&store, &boot, 1..4).await;
    // Its heartbeat is fresh, but nobody holds its lock: it is dead.
    let (writer, handle) = ReceiptWriter::spawn(&store);
    writer.probe().await.unwrap();
    assert_eq!(writer.stats().receipts, 3);
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
    // The dead writer is unregistered and its lock file removed; ours is there.
    assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 1);
    assert!(!lock.exists());
    assert_eq!(liveness::lock_files(store.path()).len(), 1);
    handle.shutdown().await;
    assert!(liveness::lock_files(store.path()).is_empty());
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (3, None));
    let r = store.get_receipt(&id(2)).await.unwrap().unwrap();
    assert_eq!(r.content.outcome, Outcome::Interrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_writers_intents_are_not_recovered_even_when_its_heartbeat_is_stale() {
    if boot_id().is_none() {
        eprintln!("skipped: no boot id on this system");
        return;
    }
    let (_dir, store) = store().await;
    let slow = WriterOptions {
        heartbeat: Duration::from_secs(3600),
        ..Default::default()
    };
    let (live, live_handle) = ReceiptWriter::spawn_with(&store, slow);
    for i in 1..4 {
        live.intent(&sample(&id(i))).await.unwrap();
    }
    // Its heartbeat says dead; its lock says alive, and the lock wins.
    sqlx::query("UPDATE writers SET heartbeat = 0")
        .execute(store.pool())
        .await
        .unwrap();
    let (other, other_handle) = ReceiptWriter::spawn(&store);
    other.probe().await.unwrap();
    assert_eq!(other.recover_intents().await.unwrap(), 0);
    assert_eq!(store.recover_intents().await.unwrap(), 0);
    assert_eq!(other.stats().receipts, 0);
    other_handle.shutdown().await;
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 3);
    assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 1);

    // The live writer finishes one call; at shutdown the others become
    // `interrupted`, and its lock file goes.
    live.commit(sample(&id(1))).await.unwrap();
    live_handle.shutdown().await;
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
    assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
    assert!(liveness::lock_files(store.path()).is_empty());
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM receipts ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(outcomes, ["ok", "interrupted", "interrupted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_file_from_another_boot_leaves_it_to_the_heartbeat() {
    let (_dir, store) = store().await;
    let lock = killed_writer(&store, "another-boot", 1..3).await;
    assert_eq!(store.recover_intents().await.unwrap(), 0);
    assert!(lock.exists());
    sqlx::query("UPDATE writers SET heartbeat = 0")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.recover_intents().await.unwrap(), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
    // Not this host's file to judge; a later writer's start-up removes
    // it as stray, since nobody holds it and no writer owns it.
    let (writer, handle) = ReceiptWriter::spawn(&store);
    writer.probe().await.unwrap();
    assert!(!lock.exists());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_intent_becomes_one_interrupted_receipt() {
    let (_dir, store) = store().await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    writer.commit(sample(&id(0))).await.unwrap();
    handle.shutdown().await;
    orphans(&store, 1..2).await;

    assert_eq!(store.recover_intents().await.unwrap(), 1);
    assert_eq!(store.recover_intents().await.unwrap(), 0);
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (2, None));
    let r = store.get_receipt(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.seq, 2);
    assert_eq!(r.content.outcome, Outcome::Interrupted);
    assert_eq!(r.content.reason.as_deref(), Some(INTERRUPTED_REASON));
    assert_eq!(r.content.args, sample(&id(1)).args);
    // The dead writer's row is gone too.
    assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_recovers_orphans_when_it_starts() {
    let (_dir, store) = store().await;
    orphans(&store, 1..4).await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    // Its first answer comes after its start-up recovery.
    writer.probe().await.unwrap();
    assert_eq!(writer.stats().receipts, 3);
    writer.commit(sample(&id(9))).await.unwrap();
    handle.shutdown().await;
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (4, None));
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM receipts WHERE outcome = 'interrupted'"
        )
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recoveries_append_each_receipt_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let a = Store::open(&path).await.unwrap();
    let b = Store::open(&path).await.unwrap();
    orphans(&a, 0..50).await;
    let (na, nb, nc) = tokio::join!(a.recover_intents(), b.recover_intents(), async {
        let (w, h) = ReceiptWriter::spawn(&b);
        // A new writer recovers at start-up too: count that pass, which
        // may win the race, as well as the explicit one.
        w.probe().await.unwrap();
        let at_start = usize::try_from(w.stats().receipts).unwrap();
        let n = w.recover_intents().await.unwrap();
        h.shutdown().await;
        at_start + n
    });
    let (na, nb) = (na.unwrap(), nb.unwrap());
    assert_eq!(na + nb + nc, 50, "{na} + {nb} + {nc}");
    let report = a.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (50, None));
    assert_eq!(
        count(&a, "SELECT count(DISTINCT id) FROM receipts").await,
        50
    );
    assert_eq!(count(&a, "SELECT count(*) FROM intents").await, 0);
}

#[tokio::test]
async fn a_live_writers_intents_are_left_alone() {
    let (_dir, store) = store().await;
    let (writer, handle) = ReceiptWriter::spawn(&store);
    writer.intent(&sample(&id(1))).await.unwrap();
    assert_eq!(store.recover_intents().await.unwrap(), 0);
    assert_eq!(writer.recover_intents().await.unwrap(), 0);
    let (other, other_handle) = ReceiptWriter::spawn(&store);
    other.probe().await.unwrap();
    other_handle.shutdown().await;
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM receipts").await, 0);

    // At shutdown, a call that never committed is recorded as interrupted.
    handle.shutdown().await;
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
    let r = store.get_receipt(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.content.outcome, Outcome::Interrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_turns_health_red_until_a_write_succeeds() {
    let (dir, store) = store().await;
    let quick = WriterOptions {
        busy_timeout: Duration::from_millis(100),
        heartbeat: Duration::from_secs(3600),
        ..Default::default()
    };
    let (writer, handle) = ReceiptWriter::spawn_with(&store, quick);
    writer.probe().await.unwrap();
    assert!(writer.healthy());
    let mut health = writer.health();
    health.borrow_and_update();

    // Another process holds the write lock for longer than the busy timeout.
    let locker = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = writer.commit(sample(&id(1))).await.unwrap_err();
    assert!(err.to_string().contains("another process"), "{err}");
    assert!(!writer.healthy());
    assert!(health.has_changed().unwrap());
    match &*health.borrow_and_update() {
        StorageHealth::Unhealthy { cause } => assert!(cause.contains("locked"), "{cause}"),
        h => panic!("{h:?}"),
    }
    assert!(writer.probe().await.is_err());
    assert!(writer.intent(&sample(&id(2))).await.is_err());
    assert!(!writer.healthy());

    locker.execute_batch("ROLLBACK").unwrap();
    writer.probe().await.unwrap();
    assert!(writer.healthy());
    assert!(health.has_changed().unwrap());
    writer.commit(sample(&id(3))).await.unwrap();
    handle.shutdown().await;
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (1, None));
    assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_turns_health_red_until_it_is_writable() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = store().await;
    let path = dir.path().join("t.db");
    let mode = |m: u32| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));
    mode(0o444).unwrap();
    // root (as in CI containers) writes to read-only files anyway; the
    // locked-database test covers the health logic there.
    if std::fs::OpenOptions::new().append(true).open(&path).is_ok() {
        mode(0o644).unwrap();
        eprintln!("skipped: this user can write to read-only files");
        return;
    }
    // SQLite opens a read-only file read-only, and refuses writes.
    let (writer, handle) = ReceiptWriter::spawn(&store);
    let err = writer.probe().await.unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    assert!(!writer.healthy());
    match &*writer.health().borrow() {
        StorageHealth::Unhealthy { cause } => {
            assert!(cause.contains("is the file writable?"), "{cause}")
        }
        h => panic!("{h:?}"),
    }
    assert!(writer.commit(sample(&id(1))).await.is_err());

    // Fixed: the writer reconnects, and the next write turns it green.
    mode(0o644).unwrap();
    writer.probe().await.unwrap();
    assert!(writer.healthy());
    writer.commit(sample(&id(2))).await.unwrap();
    handle.shutdown().await;
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_bad), (1, None));
}
