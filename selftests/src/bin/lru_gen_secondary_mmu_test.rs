//! lru_gen_secondary_mmu_test: does MGLRU aging see memory that only a guest touches?
//!
//! The seed thread's scenario ("mm: multi-gen LRU: Have secondary MMUs participate in aging"):
//! after population and two aging passes every host PTE of guest memory is old, so from then on
//! only KVM's page tables record the guest's accesses. The guest reads set A (a quarter of its
//! memory); an aging pass must find A young (a forced pass moves young pages into the generation
//! that was youngest when it started, `max_seq - 1` afterwards). Then the guest reads only
//! set B (another quarter); the next pass must find B young and A no longer.
//!
//! With `-y N` the process is a VMM with several VMs: N idle bystander VMs live in it for the
//! whole scenario, the first created before the test VM, the second after it, and so on. Each VM
//! is one more secondary MMU (KVM mmu notifier) on the process's mm, and aging asks them all
//! about every range: the VM created last first, the one created first last. The bystanders'
//! memory is separate, so they answer "old"; the test VM's young pages must still be found young,
//! so a kernel that keeps only the last (or only the first) answer instead of combining them
//! fails. Their own pages are charged outside the class memcgs, like the VMM's.
//!
//! Judged exactly, page class by page class: set A, set B and the rest of guest memory are each
//! charged to a memcg of their own (the guest first touches each class while this process sits in
//! that memcg; the VMM's own pages stay outside), so the young pages of A's memcg are true
//! positives and those of the others false positives. Each memcg is aged with this process a
//! member of it: MGLRU's walk visits only the page tables of its memcg's mms. Per pass the test prints recall and
//! precision; "seen" means both ≥ 90% (the kernel selftests' rule), "not seen" recall ≤ 10%.
//!
//! Direct evidence: where the kernel has tracefs and KVM's trace events, each forced aging pass is
//! traced (this thread only) and the test prints `aging pass N: KVM asked M times for P pages`
//! (counted over every VM of the process: each traces every range it is asked about).
//!
//! Verdicts: with `-e yes|no` (`--expect-secondary-mmu-aging`) each check passes when what was
//! observed matches the expectation — the lab states it per kernel (6.1 and the negative-control
//! kernel: no; 6.12+: yes), so a kernel that stops (or starts) asking KVM fails. Without an
//! expectation the test follows the kernel selftest convention: the feature under test must
//! work, so a kernel whose aging does not see guest-only accesses fails. The version number is
//! never consulted: the behaviour is observed.
//!
//! Then the cost to the guest (skipped with `-n`): vCPU ns per write while an aging agent loops
//! versus while it rests, per source: lru_gen forced aging, page_idle marking, and agelab's
//! kvm-clear-log and uffd-minor (on any kernel) — the mmu_lock versus lockless question, measured.
//!
//! Exit codes: 0 pass, 1 fail, 4 skip (no KVM, or nothing could be measured), 2 bad usage.

use agelab::access_tracking::agents::{
    agelab_source, measure_slowdown, AgingAgent, LruGenAgent, PageIdleAgent, SlowdownPlan,
    SourceAgent,
};
use agelab::access_tracking::bystanders::{BystanderPlan, BystanderVms, MAX_BYSTANDERS};
use agelab::access_tracking::env::describe_secondary_mmu_cap;
use agelab::access_tracking::fail;
use agelab::access_tracking::folios::{check_folios, checks_folios, prepare_backing};
use agelab::access_tracking::kvm_trace::KvmAgingTrace;
use agelab::access_tracking::lru_gen::{
    lru_gen_usable, MemcgAging, MemcgGenerations, Observed, YoungJudgement,
};
use agelab::access_tracking::page_idle::IdleMarker;
use agelab::args::{duration_at_least, from_str, number_in, size_at_least};
use agelab::ktap::{Ktap, OrFail, OrSkip, TestId, TestPlan};
use agelab_mglru::kernel::lru_gen::LruGenControl;
use agelab_mglru::kernel::page_idle::page_idle_unavailable;
use agelab_mglru::lru_gen_aging::LruGenAgingError;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress, MemstressConfig};
use agelab_vmm::{Backing, PAGE_SIZE};
use clap::Parser;
use std::time::Duration;

const NAME: &str = "lru_gen_secondary_mmu_test";
const USAGE: &str =
    "usage: lru_gen_secondary_mmu_test [-h] [-b vcpu_bytes] [-v vcpus] [-d window] [-p period]
                                  [-s mem_type] [-e yes|no] [-n] [-y bystander_vms]
  -e, --expect-secondary-mmu-aging yes|no: what this kernel is expected to do (empty: no
      expectation; then guest-only accesses must be seen, the kernel selftest convention)
  -n: no cost measurements (only the aging scenario)
  -y, --bystander-vms N: idle VMs in this process during the aging scenario, alternately
      created before and after the test VM (default: 0, at most 8): each adds a KVM mmu
      notifier to the process, so aging must combine every VM's answer
  -s: backing of guest memory: shmem/memfd (default: the one every cost source can track),
      anonymous (4 KiB), anonymous_thp, anonymous_hugetlb, mthp-SIZE (anonymous multi-size
      THP, e.g. mthp-64k), memfd-mthp-SIZE (shmem large folios); an mTHP size is turned on for
      the test (journaled, restored) and skipped where the kernel lacks it
  -b: memory per vCPU, e.g. 32M (default: 32M)
  -v: vCPUs (default: 2)
  -d: length of each resting/aging measuring window, e.g. 300ms (default: 300ms; 2 of each)
  -p: one aging pass every period while aging, e.g. 10ms (default: 10ms)";

/// Sources whose cost is measured, in report order.
const SLOWDOWN_SOURCES: &[&str] = &["lru_gen", "page_idle", "kvm-clear-log", "uffd-minor"];

/// `-e`: what this kernel is expected to do (empty: no expectation).
#[derive(Clone, Copy, Debug)]
struct Expectation(Option<Observed>);

/// A `-e` value other than yes, no or empty.
#[derive(Debug, thiserror::Error)]
#[error("expected yes, no or empty")]
struct BadExpectation;

fn expectation(s: &str) -> Result<Expectation, BadExpectation> {
    match s {
        "yes" => Ok(Expectation(Some(Observed::Yes))),
        "no" => Ok(Expectation(Some(Observed::No))),
        "" => Ok(Expectation(None)),
        _ => Err(BadExpectation),
    }
}

#[derive(Debug, Parser)]
#[command(name = NAME, args_override_self = true)]
struct Args {
    /// What this kernel is expected to do.
    #[arg(short = 'e', long = "expect-secondary-mmu-aging", value_name = "yes|no", value_parser = expectation)]
    expect: Option<Expectation>,
    /// No cost measurements (only the aging scenario).
    #[arg(short = 'n')]
    no_cost: bool,
    /// Idle VMs in this process during the aging scenario.
    #[arg(short = 'y', long = "bystander-vms", value_name = "N", default_value = "0", value_parser = number_in(0usize..=MAX_BYSTANDERS))]
    bystander_vms: usize,
    /// Backing of guest memory (shmem: the one every cost source can track, uffd-minor needs it).
    #[arg(short = 's', value_name = "mem_type", default_value = "shmem", value_parser = from_str::<Backing>)]
    backing: Backing,
    /// Memory per vCPU.
    #[arg(short = 'b', value_name = "vcpu_bytes", default_value = "32M", value_parser = size_at_least(16 * PAGE_SIZE))]
    bytes_per_vcpu: u64,
    /// vCPUs.
    #[arg(short = 'v', value_name = "vcpus", default_value = "2", value_parser = number_in(1usize..=64))]
    vcpus: usize,
    /// Length of each resting/aging measuring window.
    #[arg(short = 'd', value_name = "window", default_value = "300ms", value_parser = duration_at_least(Duration::from_millis(10)))]
    window: Duration,
    /// One aging pass every period while aging.
    #[arg(short = 'p', value_name = "period", default_value = "10ms", value_parser = duration_at_least(Duration::ZERO))]
    period: Duration,
}

fn new_vm(cfg: &MemstressConfig) -> Memstress {
    Memstress::new(cfg).or_skip()
}

/// Reads pages `[first, first + n)` of every vCPU's region a few times.
fn guest_reads(ms: &Memstress, first: u64, n: u64) {
    ms.run(GuestCmd::window(Access::Read, 4, first, n))
        .or_fail();
}

/// The memcgs of the three page classes: set A, set B, the rest of guest memory.
struct ClassMemcgs {
    a: MemcgAging,
    b: MemcgAging,
    rest: MemcgAging,
}

impl ClassMemcgs {
    fn create() -> Result<Self, LruGenAgingError> {
        let make =
            |class: &str| MemcgAging::create(&format!("{NAME}-{class}-{}", std::process::id()));
        Ok(ClassMemcgs {
            a: make("a")?,
            b: make("b")?,
            rest: make("rest")?,
        })
    }

    fn all(&self) -> [&MemcgAging; 3] {
        [&self.a, &self.b, &self.rest]
    }
}

/// Says over how many VMs the trace counts are summed, when there are several.
fn over_vms(vms_on_mm: u64) -> String {
    if vms_on_mm > 1 {
        format!(" over the {vms_on_mm} VMs of this process")
    } else {
        String::new()
    }
}

/// One forced aging pass over every class memcg; young pages per class (A, B, rest) and, where
/// tracing works, what KVM was asked during the pass (by all `vms_on_mm` VMs of the process).
fn age_classes(
    k: &Ktap,
    sets: &ClassMemcgs,
    trace: Option<&KvmAgingTrace>,
    vms_on_mm: u64,
    pass: usize,
) -> [u64; 3] {
    let age_all = || -> Vec<MemcgGenerations> {
        let gens = sets
            .all()
            .iter()
            .map(|m| m.age_as_member().or_fail().0)
            .collect();
        sets.rest.leave().or_fail();
        gens
    };
    let gens = match trace {
        Some(t) => match t.count(age_all) {
            Ok((g, calls)) => {
                k.diag(&format!(
                    "aging pass {pass}: KVM asked {} times for {} pages ({} clear_young, {} test_young){}",
                    calls.calls(),
                    calls.pages(),
                    calls.age_calls,
                    calls.test_calls,
                    over_vms(vms_on_mm)
                ));
                for walk in &calls.skipped_walks {
                    k.diag(&format!("aging pass {pass}: {}", walk.describe()));
                }
                g
            }
            Err(e) => fail(&format!("counting KVM trace events: {e}")),
        },
        None => age_all(),
    };
    [
        gens[0].found_young(),
        gens[1].found_young(),
        gens[2].found_young(),
    ]
}

/// The aging scenario's tests, in report order.
struct AgingTests {
    /// Pages only the guest touched are found young.
    young: TestId,
    /// Pages the guest stops touching age out.
    age_out: TestId,
    /// Aging asked KVM (trace events).
    asked_kvm: TestId,
    /// Aging asked KVM about every page of the set, not part of a batch (trace events).
    asked_every_page: TestId,
    /// Guest memory sits in folios of the backing's size (backings that decide it).
    folios: Option<TestId>,
}

impl AgingTests {
    fn register(plan: &mut TestPlan, backing: &Backing) -> Self {
        AgingTests {
            folios: checks_folios(backing).then(|| {
                plan.add(format!(
                    "guest memory sits in folios of the {backing} backing's size (kpageflags)"
                ))
            }),
            young: plan.add("pages only the guest touched are found young by lru_gen aging"),
            age_out: plan
                .add("pages the guest stops touching age out, the ones it touches now are young"),
            asked_kvm: plan.add("aging asked KVM for young bits (kvm_age_hva trace events)"),
            asked_every_page: plan.add(
                "aging asked KVM about every page of the set it aged, whole batches (kvm_age_hva pages)",
            ),
        }
    }

    fn all(&self) -> Vec<TestId> {
        let mut v: Vec<TestId> = self.folios.into_iter().collect();
        v.extend([
            self.young,
            self.age_out,
            self.asked_kvm,
            self.asked_every_page,
        ]);
        v
    }
}

/// The aging scenario; returns what the first judged pass observed.
fn aging_scenario(
    k: &mut Ktap,
    tests: &AgingTests,
    sets: &ClassMemcgs,
    cfg: &MemstressConfig,
    bystanders: BystanderPlan,
    expect: Option<Observed>,
) -> Observed {
    let trace = match KvmAgingTrace::open() {
        Ok(t) => Some(t),
        Err(e) => {
            k.diag(&format!("no direct evidence of KVM calls: {e}"));
            None
        }
    };
    // A VMM process with several VMs. The process is in none of the class memcgs yet, so what
    // the bystanders' builds write is charged outside them; they live until the scenario ends.
    let _before = BystanderVms::create(bystanders.before).or_skip();
    let mut ms = new_vm(cfg);
    let _after = BystanderVms::create(bystanders.after).or_skip();
    k.diag(&bystanders.describe());
    let vms = bystanders.vms_on_mm();
    ms.start().or_fail();
    let quarter = ms.pages_per_vcpu() / 4;
    let set = quarter * cfg.vcpus as u64;
    // Each class is first touched while this process sits in its memcg.
    let populate = |m: &MemcgAging, first: u64, pages: u64| {
        m.charge(|| ms.run(GuestCmd::window(Access::Write, 1, first, pages)))
            .or_fail()
            .or_fail();
    };
    populate(&sets.a, 0, quarter);
    populate(&sets.b, quarter, quarter);
    populate(&sets.rest, 2 * quarter, 0);
    if let Some(id) = tests.folios {
        check_folios(k, id, &cfg.backing, ms.vm().page_map());
    }
    let sizes: Vec<u64> = sets
        .all()
        .iter()
        .map(|m| m.read().or_fail().total())
        .collect();
    k.diag(&format!(
        "guest memory {} pages ({} backing) in three memcgs: A {} pages (set {set}), B {} (set {set}), rest {} (guest {})",
        ms.test_pages(),
        cfg.backing,
        sizes[0],
        sizes[1],
        sizes[2],
        ms.test_pages() - 2 * set
    ));
    // Two passes: the first clears the young bits population left in host PTEs, the second
    // shows what is young with nobody touching anything.
    age_classes(k, sets, trace.as_ref(), vms, 0);
    let idle = age_classes(k, sets, trace.as_ref(), vms, 0);
    k.diag(&format!(
        "nobody touched anything: young A {} B {} rest {}",
        idle[0], idle[1], idle[2]
    ));

    // Pass 1 after the guest read set A only, pass 2 after it read set B only: the set read
    // must be young, the other two not.
    let pass_after_reading = |pass: usize, name: &str| {
        guest_reads(&ms, (pass as u64 - 1) * quarter, quarter);
        let y = age_classes(k, sets, trace.as_ref(), vms, pass);
        let judgement = YoungJudgement {
            touched: set,
            true_young: y[pass - 1],
            false_young: y.iter().sum::<u64>() - y[pass - 1],
        };
        k.diag(&format!(
            "aging pass {pass} after the guest read {name} only: {}",
            judgement.describe()
        ));
        judgement
    };
    let pass1 = pass_after_reading(1, "A");
    let pass2 = pass_after_reading(2, "B");

    let want = expect.unwrap_or(Observed::Yes);
    let verdict = |k: &mut Ktap, j: &YoungJudgement, id: TestId| {
        let seen = j.observed();
        let what = k.name(id);
        k.diag(&format!(
            "{what}: observed {}, expected {}{}",
            seen.as_str(),
            want.as_str(),
            if expect.is_none() {
                " (no expectation given: the kernel selftest convention)"
            } else {
                ""
            }
        ));
        k.result(id, seen == want);
    };
    verdict(k, &pass1, tests.young);
    verdict(k, &pass2, tests.age_out);
    let desc = tests.asked_kvm;
    match &trace {
        None => {
            let why = "no tracefs or no kvm trace events in this kernel";
            k.skip(desc, why);
            k.skip(tests.asked_every_page, why);
        }
        Some(t) => {
            let (_, calls) = t
                .count(|| {
                    guest_reads(&ms, 0, quarter);
                    let g = sets.a.age_as_member();
                    sets.a.leave().or_fail();
                    g.or_fail()
                })
                .unwrap_or_else(|e| fail(&format!("counting KVM trace events: {e}")));
            let asked = calls.calls() > 0;
            k.diag(&format!(
                "aging set A's memcg after the guest read it: KVM asked {} times for {} pages{}; expected {}",
                calls.calls(),
                calls.pages(),
                over_vms(vms),
                if want == Observed::Yes { "> 0" } else { "0" }
            ));
            for walk in &calls.skipped_walks {
                k.diag(&format!("aging set A's memcg: {}", walk.describe()));
            }
            k.result(desc, asked == (want == Observed::Yes));
            // 7.2 ages a large folio's PTEs as one batch and asks KVM about the batch's whole
            // range; a kernel that asks about part of it (its first page) still finds the folio
            // young, so only the pages KVM was asked about show the loss. Every present page of
            // set A's memcg is walked (forced aging, the process a member), so with aging
            // through KVM the pages asked cover at least the set, once per VM of the process:
            // clear_young asks every mmu notifier on the mm and each VM traces the range before
            // it looks at its memslots.
            let covered = set * vms;
            let complete = match want {
                Observed::Yes => calls.pages() >= covered,
                _ => calls.pages() == 0,
            };
            k.diag(&format!(
                "KVM asked about {} pages{} while aging set A ({set} pages, {} backing): expected {}",
                calls.pages(),
                over_vms(vms),
                cfg.backing,
                if want == Observed::Yes {
                    format!(">= {covered}")
                } else {
                    "0".into()
                }
            ));
            k.result(tests.asked_every_page, complete);
        }
    }
    pass1.observed()
}

/// Measures one source's cost; `None` with the reason when it cannot run here.
fn slowdown(
    k: &mut Ktap,
    desc: TestId,
    name: &str,
    cfg: &MemstressConfig,
    memcg: Option<&MemcgAging>,
    plan: SlowdownPlan,
) {
    let mut ms = new_vm(cfg);
    let agent: Result<Box<dyn AgingAgent + '_>, String> = match name {
        "lru_gen" => memcg
            .map(|m| Box::new(LruGenAgent(m)) as Box<dyn AgingAgent>)
            .ok_or_else(|| "lru_gen aging is not usable on this kernel".to_string()),
        "page_idle" => match page_idle_unavailable() {
            Some(e) => Err(e.to_string()),
            None => IdleMarker::open()
                .map(|marker| {
                    Box::new(PageIdleAgent {
                        marker,
                        map: ms.vm().page_map().clone(),
                    }) as Box<dyn AgingAgent>
                })
                .map_err(|e| e.to_string()),
        },
        _ => agelab_source(name, ms.vm_mut())
            .map(|s| Box::new(SourceAgent(s)) as Box<dyn AgingAgent>)
            .map_err(|e| e.to_string()),
    };
    let mut agent = match agent {
        Ok(a) => a,
        Err(why) => {
            k.skip(desc, &why);
            return;
        }
    };
    ms.start().or_fail();
    // Population charged to the memcg lru_gen ages (the whole guest, nothing of the VMM), and
    // this process stays a member while it is aged (the walk visits its members' mms only).
    if let Some(m) = memcg {
        m.join().or_fail();
    }
    ms.run(GuestCmd::sweep(Access::Write)).or_fail();
    match measure_slowdown(&ms, agent.as_mut(), plan) {
        Ok(s) => {
            k.diag(&format!(
                "{name:<14} idle {:>8.2} ns/access  aging {:>8.2} ns/access  ratio {:>6.2}  ({} passes, {:.2} ms/pass)",
                s.idle_ns,
                s.aging_ns,
                s.ratio(),
                s.passes,
                s.pass_ms
            ));
            k.result(desc, true);
        }
        Err(e) => {
            k.diag(&e.to_string());
            k.result(desc, false);
        }
    }
    if let Some(m) = memcg {
        m.leave().or_fail();
    }
}

fn main() {
    if let Err(e) = agelab_mglru::host_guard::install_signal_cleanup() {
        fail(&e.to_string());
    }
    let args: Args = agelab::args::parse(NAME, USAGE);
    let cfg = MemstressConfig {
        vcpus: args.vcpus,
        bytes_per_vcpu: args.bytes_per_vcpu,
        overlap: false,
        backing: args.backing.clone(),
    };
    let plan = SlowdownPlan {
        window: args.window,
        rounds: 2,
        period: args.period,
    };
    let expect = args.expect.and_then(|e| e.0);
    agelab_vmm::vm::open_kvm().or_skip();
    let ctl = LruGenControl::new();
    let usable = lru_gen_usable(&ctl);
    let _folio_size_on = prepare_backing(&args.backing);
    let mut tests = TestPlan::new();
    let aging = AgingTests::register(&mut tests, &args.backing);
    let costs: Vec<(TestId, &str)> = if args.no_cost {
        Vec::new()
    } else {
        SLOWDOWN_SOURCES
            .iter()
            .map(|&name| (tests.add(format!("guest slowdown while {name} ages")), name))
            .collect()
    };
    let mut k = tests.start();
    match ctl.caps() {
        Ok(caps) => k.diag(&format!(
            "lru_gen caps {}",
            describe_secondary_mmu_cap(caps)
        )),
        Err(e) => k.diag(&format!("lru_gen caps: none ({e})")),
    }
    let sets = match &usable {
        Ok(_) => match ClassMemcgs::create() {
            Ok(m) => Some(m),
            Err(e) => {
                k.diag(&format!("cannot create the test's memcgs: {e}"));
                None
            }
        },
        Err(_) => None,
    };
    match &sets {
        Some(sets) => {
            let bystanders = BystanderPlan::around_test_vm(args.bystander_vms);
            let seen = aging_scenario(&mut k, &aging, sets, &cfg, bystanders, expect);
            k.diag(&format!(
                "this kernel ages through the secondary MMU: {}",
                match seen {
                    Observed::Yes => "yes (lru_gen sees guest-only accesses)",
                    Observed::No => "no (guest-only accesses stay invisible to lru_gen aging)",
                    Observed::Partly => "partly (some guest-only accesses seen, not 90%)",
                }
            ));
        }
        None => {
            let why = usable.err().map_or_else(
                || "the test memcgs could not be created".to_string(),
                |e| e.to_string(),
            );
            for id in aging.all() {
                k.skip(id, &why);
            }
        }
    }
    if !costs.is_empty() {
        k.diag(&format!(
            "guest cost of aging: {} vCPU(s) x {} MiB memfd, writes, {} x {:?} windows each, one pass every {:?}",
            cfg.vcpus,
            cfg.bytes_per_vcpu >> 20,
            plan.rounds,
            plan.window,
            plan.period
        ));
        for (id, name) in costs {
            slowdown(&mut k, id, name, &cfg, sets.as_ref().map(|s| &s.rest), plan);
        }
    }
    drop(sets);
    agelab_mglru::host_guard::run_pending();
    k.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agelab::args::{try_parse_from, Refusal};

    fn parse(line: &str) -> Result<Args, Refusal> {
        try_parse_from(std::iter::once(NAME).chain(line.split_whitespace()))
    }

    #[test]
    fn bystander_vms_default_to_none_and_take_short_and_long_forms() {
        assert_eq!(parse("-n").expect("accepted").bystander_vms, 0);
        assert_eq!(parse("-n -y 2").expect("accepted").bystander_vms, 2);
        assert_eq!(parse("-y2").expect("accepted").bystander_vms, 2);
        assert_eq!(
            parse("--bystander-vms 8 -y 1")
                .expect("accepted")
                .bystander_vms,
            1,
            "the last value wins, as with getopt"
        );
        assert_eq!(
            parse("--bystander-vms=3").expect("accepted").bystander_vms,
            3
        );
    }

    #[test]
    fn a_bystander_count_out_of_range_is_refused_naming_the_option() {
        for line in ["-y 9", "-y two", "--bystander-vms 100", "-y"] {
            match parse(line) {
                Err(Refusal::Bad(msg)) => assert!(
                    msg.contains("-y") || msg.contains("--bystander-vms"),
                    "{line}: {msg}"
                ),
                other => panic!("{line}: expected a refusal, got {other:?}"),
            }
        }
        // clap reads "-1" as an option of its own: refused, naming "-1".
        assert!(matches!(parse("-y -1"), Err(Refusal::Bad(_))));
        match parse("-y 9") {
            Err(Refusal::Bad(msg)) => assert!(msg.contains("expected 0..8"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
