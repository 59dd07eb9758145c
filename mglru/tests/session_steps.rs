//! `AgingSession::epoch_timed` tells its hook every step of an epoch once, in the order the
//! epoch runs them, with the times they took: the guest's epoch at least its interval, the
//! aging pass's CPU time on the calling thread.

use agelab_mglru::session::{AgingSession, SessionOptions, SessionStep, StepTiming};
use agelab_mglru::{Engine, EngineConfig};
use agelab_util::progress::ProgressLine;
use agelab_vmm::testing::skip;
use agelab_vmm::{Vm, VmConfig};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(100);

/// What the hook heard over one epoch, in order.
fn steps_of_one_epoch() -> Option<Vec<StepTiming>> {
    const TEST: &str = "epoch_timed_reports_each_step_once_in_order";
    let vm = match Vm::new(VmConfig {
        vcpus: 1,
        mem_bytes: 16 << 20,
        ..Default::default()
    }) {
        Ok(vm) => vm,
        Err(e) => {
            skip(TEST, &e.to_string());
            return None;
        }
    };
    let engine = Engine::new(vm.page_map().clone(), EngineConfig::default()).unwrap();
    let mut session = AgingSession::start(
        vm,
        "hotcold:hot=10%,p=100%,op=read".parse().unwrap(),
        Some(engine),
        None,
        SessionOptions {
            duration: Duration::MAX,
            interval: INTERVAL,
            trim_last_epoch: false,
            oracle: true,
            arm_at_start: false,
            progress: ProgressLine::off(),
        },
    )
    .unwrap();
    let mut heard = Vec::new();
    let (_, truth, pass) = session.epoch_timed(&mut |t| heard.push(t)).unwrap();
    let pass = pass.expect("the session ages");
    assert!(truth.accessed().count() > 0, "the guest read its hot set");
    assert_eq!(pass.sources.len(), 1, "the oracle alone");
    let (wl, _, _) = session.finish();
    wl.finish().unwrap();
    Some(heard)
}

#[test]
fn epoch_timed_reports_each_step_once_in_order() {
    let Some(heard) = steps_of_one_epoch() else {
        return;
    };
    let order: Vec<SessionStep> = heard.iter().map(|t| t.step).collect();
    assert_eq!(
        order,
        [
            SessionStep::Guest,
            SessionStep::Truth,
            SessionStep::Age,
            SessionStep::Arm
        ]
    );
    assert!(
        heard[0].wall >= INTERVAL,
        "the guest ran its whole epoch: {:?}",
        heard[0]
    );
    assert!(
        heard[2].thread_cpu > Duration::ZERO,
        "the aging pass ran on this thread: {:?}",
        heard[2]
    );
}
