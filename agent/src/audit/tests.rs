use super::*;

fn rec(route: Option<&str>, status: u16, decision: Decision) -> Record {
    Record {
        ts: timestamp(SystemTime::now()),
        route: route.map(String::from),
        method: "GET".into(),
        scheme: "https".into(),
        host: "api.example.com".into(),
        port: 443,
        path: "/v1/x".into(),
        status,
        bytes_in: 1,
        bytes_out: 2,
        duration_ms: 3,
        decision,
        credential: None,
        fingerprint: None,
        reason: None,
    }
}

#[test]
fn summary_counts_and_round_trips_through_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("a.jsonl");
    let audit = Audit::open(Some(&path)).expect("open");
    audit.job(&serde_json::json!({"repository": "acme/app"}));
    audit.record(&rec(Some("api"), 200, Decision::Injected));
    audit.record(&rec(Some("api"), 200, Decision::Injected));
    audit.record(&rec(Some("api"), 403, Decision::Denied));
    audit.record(&rec(None, 200, Decision::Tunnelled));
    let from_file = Summary::from_file(&path).expect("read");
    assert_eq!(from_file, audit.summary());
    let table = from_file.table();
    assert!(table.contains("api"), "{table}");
    assert!(table.contains("200×2 403×1"), "{table}");
    assert!(table.contains("(tunnelled) api.example.com:443"), "{table}");
    let md = from_file.markdown();
    assert!(
        md.contains("| api | 3 | 200×2 403×1 | 1 | 0 | 3/6 |"),
        "{md}"
    );
}

#[test]
fn served_rows_name_the_endpoint_that_served() {
    let mut s = Summary::default();
    for (path, cred) in [
        (
            "/computeMetadata/v1/instance/service-accounts/default/token",
            "gcs",
        ),
        ("/", "-"),
        ("/azure/managed-identity", "kv"),
        ("/aws/container-credentials/x", "aws"),
    ] {
        let mut r = rec(None, 200, Decision::Served);
        r.path = path.into();
        r.credential = (cred != "-").then(|| cred.to_owned());
        s.add(&r);
    }
    let t = s.table();
    for row in [
        "(served) GCE metadata of gcs",
        "(served) GCE metadata of -",
        "(served) Azure managed-identity tokens of kv",
        "(served) AWS keys of aws",
    ] {
        assert!(t.contains(row), "{row}: {t}");
    }
}

#[tokio::test(start_paused = true)]
async fn batched_lines_reach_the_file_within_the_interval_and_at_teardown() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("a.jsonl");
    let audit = std::sync::Arc::new(Audit::open(Some(&path)).expect("open"));
    let lines = || {
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count()
    };
    // Without a flusher, every line is written at once.
    audit.record(&rec(Some("api"), 200, Decision::Injected));
    assert_eq!(lines(), 1);
    let cancel = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(audit.clone().flush_loop(cancel.clone()));
    tokio::task::yield_now().await;
    audit.record(&rec(Some("api"), 200, Decision::Injected));
    audit.record(&rec(Some("api"), 201, Decision::Injected));
    assert_eq!(lines(), 1, "batched, not yet written");
    tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(lines(), 3, "written within FLUSH_INTERVAL");
    audit.record(&rec(Some("api"), 202, Decision::Injected));
    cancel.cancel();
    flusher.await.expect("flusher");
    assert_eq!(lines(), 4, "written at teardown");
    // After the flusher stops, lines are written at once again.
    audit.record(&rec(Some("api"), 203, Decision::Injected));
    assert_eq!(lines(), 5);
    assert_eq!(Summary::from_file(&path).expect("read"), audit.summary());
}

#[test]
fn control_characters_in_fields_are_escaped() {
    let mut s = Summary::default();
    s.add(&rec(Some("a\u{1b}[31mred\u{7f}"), 200, Decision::Injected));
    let t = s.table();
    assert!(!t.contains('\u{1b}') && !t.contains('\u{7f}'), "{t:?}");
    assert!(t.contains("a\\u{1b}[31mred\\u{7f}"), "{t}");
}
