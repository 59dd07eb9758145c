use super::*;

#[test]
fn backings_parse() {
    assert_eq!("anon".parse::<Backing>().unwrap(), Backing::Anon);
    assert_eq!(
        "file:/tmp/x".parse::<Backing>().unwrap(),
        Backing::File("/tmp/x".into())
    );
    assert!("file:".parse::<Backing>().is_err());
    let e = "swap".parse::<Backing>().unwrap_err().to_string();
    assert!(e.contains("unknown backing 'swap'"), "{e}");
    assert!(e.contains("anonymous_thp"), "{e}");
}

#[test]
fn kernel_selftest_names_parse_and_display_stays_ours() {
    for (name, want, shown) in [
        ("anonymous", Backing::Anon, "anon"),
        ("anonymous_thp", Backing::Thp, "thp"),
        ("shmem", Backing::Memfd, "memfd"),
        ("anonymous_hugetlb", Backing::HugeTlb, "hugetlb"),
        ("anonymous_hugetlb_2mb", Backing::HugeTlb, "hugetlb"),
    ] {
        let b: Backing = name.parse().unwrap();
        assert_eq!(b, want, "{name}");
        assert_eq!(b.to_string(), shown, "{name}");
        assert_eq!(
            shown.parse::<Backing>().unwrap(),
            want,
            "{shown} round-trips"
        );
    }
    // The kernel's other hugetlb sizes are not offered: 2 MiB is the only size mapped here.
    assert!("anonymous_hugetlb_1gb".parse::<Backing>().is_err());
}

#[test]
fn mthp_backings_parse_and_round_trip() {
    for (name, want, shown) in [
        ("mthp-64k", Backing::Mthp(64), "mthp-64k"),
        ("mthp-16K", Backing::Mthp(16), "mthp-16k"),
        ("mthp-1m", Backing::Mthp(1024), "mthp-1m"),
        ("memfd-mthp-64k", Backing::MemfdMthp(64), "memfd-mthp-64k"),
        ("shmem-mthp-32kB", Backing::MemfdMthp(32), "memfd-mthp-32k"),
    ] {
        let b: Backing = name.parse().unwrap();
        assert_eq!(b, want, "{name}");
        assert_eq!(b.to_string(), shown);
        assert_eq!(shown.parse::<Backing>().unwrap(), want);
    }
    for bad in ["mthp-", "mthp-2m", "mthp-48k", "mthp-8k", "shmem-mthp-4k"] {
        let e = bad.parse::<Backing>().unwrap_err().to_string();
        assert!(e.contains(&format!("unknown backing '{bad}'")), "{e}");
        assert!(e.contains("mthp-SIZE"), "{e}");
    }
    assert_eq!(Backing::Mthp(64).folio_bytes(), Some(64 << 10));
    assert_eq!(Backing::Mthp(64).kind(), BackingKind::TransparentHuge);
    assert_eq!(Backing::MemfdMthp(64).kind(), BackingKind::Memfd);
}
