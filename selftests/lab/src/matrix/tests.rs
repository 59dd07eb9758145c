use super::*;

#[test]
fn parses_tests_with_options() {
    let text = "# comment\n\nkvm -- test -c /dev/kvm\nzram --zram 256M --module zram -- grep -q zram0 /proc/swaps && echo ok\nshadow --append kvm.tdp_mmu=N -- true\n";
    let tests = parse_matrix(text).unwrap().tests;
    assert_eq!(tests[2].options.append.as_deref(), Some("kvm.tdp_mmu=N"));
    let tests = &tests[..2];
    assert_eq!(tests.len(), 2);
    assert_eq!(tests[0].name, "kvm");
    assert_eq!(tests[0].options, TestOptions::default());
    assert_eq!(tests[1].options.zram.as_deref(), Some("256M"));
    assert_eq!(tests[1].options.modules, ["zram"]);
    assert_eq!(tests[1].command, "grep -q zram0 /proc/swaps && echo ok");
}

#[test]
fn rejects_bad_lines() {
    assert_eq!(parse_matrix("a\nno-separator").unwrap_err().0, 1);
    assert_eq!(parse_matrix("a -- true\na -- false").unwrap_err().0, 2);
    assert_eq!(parse_matrix("a --bogus -- true").unwrap_err().0, 1);
}

#[test]
fn kernel_facts_and_designed_failures() {
    let text = "@kernel debian-6.1 SECONDARY_MMU_AGING=no\n\
                @kernel custom-7.2 SECONDARY_MMU_AGING=yes\n\
                smmu --needs SECONDARY_MMU_AGING -- t -e \"$SECONDARY_MMU_AGING\"\n\
                other --expect-fail custom-7.2,debian-7.2 -- true\n";
    let m = parse_matrix(text).unwrap();
    let (smmu, other) = (&m.tests[0], &m.tests[1]);
    assert!(m.expects_failure(smmu, "debian-6.1"));
    assert!(!m.expects_failure(smmu, "custom-7.2"));
    // A kernel with no stated fact is expected to work.
    assert!(!m.expects_failure(smmu, "debian-6.12"));
    assert!(m.expects_failure(other, "debian-7.2"));
    assert!(!m.expects_failure(other, "debian-6.1"));
    assert_eq!(
        m.command_for(smmu, "debian-6.1"),
        "export SECONDARY_MMU_AGING=no; t -e \"$SECONDARY_MMU_AGING\""
    );
    assert_eq!(m.command_for(other, "debian-6.12"), "true");
    assert_eq!(m.select(&["other".into()]).unwrap(), vec![other.clone()]);
    assert_eq!(m.select(&[]).unwrap().len(), 2);
    assert!(m
        .select(&["nope".into()])
        .unwrap_err()
        .to_string()
        .contains("known: smmu, other"));

    assert_eq!(Outcome::from_status(1, true), Outcome::ExpectedFail(1));
    assert_eq!(Outcome::from_status(0, true), Outcome::UnexpectedPass);
    assert_eq!(Outcome::from_status(4, true), Outcome::Skip);
    assert!(!Outcome::ExpectedFail(1).fails_matrix());
    assert!(Outcome::UnexpectedPass.fails_matrix());
    assert!(Outcome::Fail(1).fails_matrix());
}

#[test]
fn bad_fact_lines_are_refused_with_their_line() {
    for bad in [
        "@kernel",
        "@kernel debian-6.1",
        "@kernel debian-6.1 SMMU",
        "@kernel debian-6.1 smmu=no",
        "@kernel debian-6.1 SMMU=maybe",
        "@kernel k A=no\n@kernel k B=yes",
    ] {
        assert!(parse_matrix(bad).is_err(), "{bad}");
    }
}

proptest::proptest! {
    // 256 cases (proptest's default): arbitrary matrix text is parsed or refused, no panic.
    #[test]
    fn arbitrary_matrix_text_never_panics(s in "(@kernel |[a-z-]{1,8} |-- |--needs |--expect-fail |[A-Z_=a-z0-9,]{0,12}|\n){0,30}") {
        let _ = parse_matrix(&s);
    }
}

#[test]
fn table() {
    let tests = ["kvm".to_string(), "long-test-name".to_string()];
    let kernels = vec!["debian-6.1".to_string(), "custom-7.2".to_string()];
    let results = vec![
        vec![Some(Outcome::Pass), Some(Outcome::Skip)],
        vec![Some(Outcome::Fail(1)), None],
    ];
    assert_eq!(
        render_table(&kernels, &tests, &results, TableStyle::default()),
        "test            debian-6.1  custom-7.2\n\
         kvm             pass        FAIL(1)   \n\
         long-test-name  skip        -         \n"
    );
    let all_passed = vec![
        vec![Some(Outcome::Pass), Some(Outcome::Skip)],
        vec![Some(Outcome::ExpectedFail(1)), None],
    ];
    let hidden = render_table(
        &kernels,
        &tests,
        &all_passed,
        TableStyle {
            colour: false,
            hide_passed: true,
        },
    );
    assert!(!hidden.contains("\nkvm "), "{hidden}");
    assert!(hidden.contains("long-test-name  skip"), "{hidden}");
    assert!(hidden.ends_with("(1 test(s) whose every cell passed not shown: --hide-passed)\n"));
    let coloured = render_table(
        &kernels,
        &tests,
        &results,
        TableStyle {
            colour: true,
            hide_passed: false,
        },
    );
    assert!(
        coloured.contains("\x1b[32mpass      \x1b[0m"),
        "{coloured:?}"
    );
}

/// Every matrix file of the lab (`selftests/lab/*matrix*.txt`) on every table kernel, split
/// into N = 1..=8 shards, with the recorded durations and with none: the shards are
/// disjoint, together they are the whole matrix, none is empty while there are at least N
/// cells, and the longest shard's estimate is within one cell of the ideal (the bound of the
/// longest-first rule).
#[test]
fn shards_of_the_real_matrices_are_disjoint_and_cover_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("matrix") && n.ends_with(".txt"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let recorded = CellDurations::read(&dir.join("cell-durations.txt")).unwrap();
    let kernels: Vec<String> = crate::kernel::KERNELS
        .iter()
        .map(|k| k.name.to_string())
        .chain(["custom-7.2+no-secondary-mmu-aging".to_string()])
        .collect();
    for file in &files {
        let m = read_matrix(file).unwrap();
        let cells: Vec<(String, String)> = kernels
            .iter()
            .flat_map(|k| m.tests.iter().map(move |t| (k.clone(), t.name.clone())))
            .collect();
        for durations in [&recorded, &CellDurations::default()] {
            let median = {
                let mut v: Vec<f64> = durations.0.values().copied().collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2)
                    .copied()
                    .unwrap_or(shard::UNKNOWN_CELL_SECS)
            };
            let secs = |c: &(String, String)| durations.0.get(c).copied().unwrap_or(median);
            for n in 1..=8 {
                let mut owner = vec![0usize; cells.len()];
                let mut load = vec![0.0f64; n];
                for k in 1..=n {
                    let mine =
                        cells_of_shard(&cells, Some(Shard { index: k, count: n }), durations);
                    for (i, _) in mine.iter().enumerate().filter(|(_, m)| **m) {
                        assert_eq!(
                            owner[i],
                            0,
                            "{}: N={n}: {:?} in shards {} and {k}",
                            file.display(),
                            cells[i],
                            owner[i]
                        );
                        owner[i] = k;
                        load[k - 1] += secs(&cells[i]);
                    }
                }
                if let Some(i) = owner.iter().position(|&o| o == 0) {
                    panic!("{}: N={n}: {:?} in no shard", file.display(), cells[i]);
                }
                if cells.len() >= n {
                    assert!(
                        load.iter().all(|&l| l > 0.0),
                        "{}: N={n}: an empty shard: {load:?}",
                        file.display()
                    );
                }
                let total: f64 = load.iter().sum();
                let longest_cell = cells.iter().map(secs).fold(0.0, f64::max);
                let worst = load.iter().copied().fold(0.0, f64::max);
                assert!(
                    worst <= total / n as f64 + longest_cell + 1e-6,
                    "{}: N={n}: shard loads {load:?}",
                    file.display()
                );
            }
        }
    }
}
