use super::*;

#[test]
fn utc_stamps_match_known_dates() {
    let at = |s: u64| utc_stamps(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(at(0).0, "1970-01-01T00:00:00Z");
    // date -u -d @1796576703
    assert_eq!(at(1_796_576_703).0, "2026-12-06T17:05:03Z");
    assert_eq!(at(1_796_576_703).1, "2026-12-06T17-05-03Z");
    // A leap day.
    assert_eq!(at(951_782_400).0, "2000-02-29T00:00:00Z");
}

#[test]
fn results_directories_are_never_reused() {
    let parent = std::env::temp_dir().join(format!("agelab-results-unique-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    let a = create_unique_dir(&parent, "T", "-shard-1-of-2").unwrap();
    let b = create_unique_dir(&parent, "T", "-shard-1-of-2").unwrap();
    assert_ne!(a, b);
    assert!(b.ends_with("T-shard-1-of-2-2"), "{}", b.display());
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn a_tests_own_ktap_is_nested_and_other_output_is_diagnostic() {
    let doc = cell_ktap(
        "dirty-log",
        &Outcome::Pass,
        "booting\nKTAP version 1\n1..1\nok 1 mode\n",
        None,
    );
    assert_eq!(
        doc,
        "KTAP version 1\n1..1\n# booting\n    KTAP version 1\n    1..1\n    ok 1 mode\nok 1 dirty-log\n"
    );
    let doc = cell_ktap("t", &Outcome::Timeout, "", Some("timed out after 5 s"));
    assert!(
        doc.ends_with("# timed out\n# timed out after 5 s\nnot ok 1 t\n"),
        "{doc}"
    );
    assert!(cell_ktap("t", &Outcome::Skip, "", None).ends_with("ok 1 t # SKIP\n"));
    assert!(cell_ktap("t", &Outcome::ExpectedFail(1), "", None)
        .ends_with("ok 1 t # XFAIL exit status 1\n"));
}

fn cell(kernel: &str, test: &str, outcome: &Outcome) -> CellRecord {
    CellRecord {
        kernel: kernel.into(),
        test: test.into(),
        outcome: outcome.key().into(),
        status: outcome.status(),
        seconds: 1.5,
        log: None,
        ktap: None,
        detail: matches!(outcome, Outcome::Timeout)
            .then(|| "timed out after 3 s (booting); QEMU killed".into()),
    }
}

fn record(
    kernels: &[&str],
    tests: &[&str],
    cells: Vec<CellRecord>,
    shard: Option<Shard>,
) -> RunRecord {
    RunRecord {
        format: RESULTS_FORMAT.into(),
        matrix: "m.txt".into(),
        matrix_hash: "0123".into(),
        arch: "x86_64".into(),
        kernels: kernels.iter().map(|s| s.to_string()).collect(),
        tests: tests.iter().map(|s| s.to_string()).collect(),
        shard,
        started_utc: "2026-12-06T17:05:03Z".into(),
        wall_seconds: 10.0,
        jobs: 2,
        accel: "tcg".into(),
        host_kernel: "6.18".into(),
        complete: true,
        cells,
        merged_from: Vec::new(),
    }
}

/// The JUnit XML parsed back with an XML reader: one suite per kernel, a case per cell
/// with its class, time and status element, and the log (with markup characters and
/// quotes) intact in `system-out`.
#[test]
fn junit_xml_parses_back() {
    use quick_xml::events::Event;
    let r = record(
        &["k<1>", "k2"],
        &["t&1", "t2"],
        vec![
            cell("k<1>", "t&1", &Outcome::Pass),
            cell("k<1>", "t2", &Outcome::Fail(3)),
            cell("k2", "t&1", &Outcome::Timeout),
            cell("k2", "t2", &Outcome::Skip),
        ],
        None,
    );
    let log = "out <b>&amp;</b> \"quoted\" 'single' ]]> end\n";
    let xml = junit(&r, &|_| log.to_string()).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut suites, mut cases, mut outs) = (Vec::new(), Vec::new(), Vec::new());
    let mut statuses = Vec::new();
    let mut in_out = false;
    let mut raw_out = String::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| {
                    e.try_get_attribute(name).unwrap().map(|a| {
                        let raw = std::str::from_utf8(&a.value).unwrap();
                        quick_xml::escape::unescape(raw).unwrap().into_owned()
                    })
                };
                match e.name().as_ref() {
                    b"testsuite" => suites.push(attr("name").unwrap()),
                    b"testcase" => cases.push((
                        attr("classname").unwrap(),
                        attr("name").unwrap(),
                        attr("time").unwrap(),
                    )),
                    b"failure" | b"error" | b"skipped" => statuses.push((
                        String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                        attr("message").unwrap_or_default(),
                    )),
                    b"system-out" => in_out = true,
                    _ => {}
                }
            }
            // Text arrives in pieces (entity references apart): joined raw, then unescaped.
            Event::Text(t) if in_out => raw_out.push_str(&t.decode().unwrap()),
            Event::GeneralRef(r) if in_out => {
                raw_out.push_str(&format!("&{};", r.decode().unwrap()))
            }
            Event::CData(t) if in_out => raw_out.push_str(&quick_xml::escape::escape(
                std::str::from_utf8(&t.into_inner()).unwrap(),
            )),
            Event::End(e) if e.name().as_ref() == b"system-out" => {
                in_out = false;
                outs.push(quick_xml::escape::unescape(&raw_out).unwrap().into_owned());
                raw_out.clear();
            }
            _ => {}
        }
    }
    assert_eq!(suites, ["k<1>", "k2"]);
    assert_eq!(
        cases,
        [
            ("lab.k<1>".into(), "t&1".into(), "1.500".into()),
            ("lab.k<1>".into(), "t2".into(), "1.500".into()),
            ("lab.k2".into(), "t&1".into(), "1.500".into()),
            ("lab.k2".into(), "t2".into(), "1.500".into()),
        ]
    );
    assert_eq!(
        statuses,
        [
            ("failure".into(), "exit status 3".into()),
            (
                "error".into(),
                "timed out after 3 s (booting); QEMU killed".into()
            ),
            ("skipped".into(), "skip".into()),
        ]
    );
    assert_eq!(outs.len(), 4, "{xml}");
    for o in &outs {
        assert_eq!(o, log);
    }
}

/// Writes `record` as a results directory under `parent`.
fn results_dir(parent: &Path, name: &str, record: &RunRecord) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_run_files(&dir, &|_| dir.clone(), record, "table\n").unwrap();
    dir
}

#[test]
fn merge_needs_every_cell_exactly_once() {
    let parent = std::env::temp_dir().join(format!("agelab-results-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    let (k, t) = (&["k1", "k2"][..], &["a", "b"][..]);
    let shard = |i| Some(Shard { index: i, count: 2 });
    let a = results_dir(
        &parent,
        "a",
        &record(
            k,
            t,
            vec![
                cell("k1", "a", &Outcome::Pass),
                cell("k2", "b", &Outcome::Fail(1)),
            ],
            shard(1),
        ),
    );
    let b = results_dir(
        &parent,
        "b",
        &record(
            k,
            t,
            vec![
                cell("k1", "b", &Outcome::Skip),
                cell("k2", "a", &Outcome::Pass),
            ],
            shard(2),
        ),
    );
    let m = merge(&[a.clone(), b.clone()]).unwrap();
    let keys: Vec<(String, String, String)> = m
        .record
        .cells
        .iter()
        .map(|c| (c.kernel.clone(), c.test.clone(), c.outcome.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            ("k1".into(), "a".into(), "pass".into()),
            ("k1".into(), "b".into(), "skip".into()),
            ("k2".into(), "a".into(), "pass".into()),
            ("k2".into(), "b".into(), "fail".into()),
        ]
    );
    assert_eq!(m.sources, [a.clone(), b.clone(), b.clone(), a.clone()]);

    let e = merge(std::slice::from_ref(&a)).unwrap_err().to_string();
    assert_eq!(
        e,
        "2 cell(s) missing: k1 / b (in no results directory), k2 / a (in no results directory)"
    );
    let e = merge(&[a.clone(), b.clone(), a.clone()])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cell k1 / a ran twice: in "), "{e}");

    // A cell stopped by Ctrl-C is missing, with its outcome named.
    let c = results_dir(
        &parent,
        "c",
        &record(
            k,
            t,
            vec![
                cell("k1", "b", &Outcome::Interrupted),
                cell("k2", "a", &Outcome::Pass),
            ],
            shard(2),
        ),
    );
    let e = merge(&[a.clone(), c]).unwrap_err().to_string();
    assert!(e.contains("k1 / b (interrupted in "), "{e}");

    let mut other = record(k, t, vec![cell("k1", "b", &Outcome::Skip)], shard(2));
    other.matrix_hash = "4567".into();
    let d = results_dir(&parent, "d", &other);
    let e = merge(&[a, d]).unwrap_err().to_string();
    assert!(e.contains("ran different matrices"), "{e}");
    std::fs::remove_dir_all(&parent).unwrap();
}
