//! The lab's CI workflow (`.github/workflows/lab.yml`): its structure, parsed as YAML (jobs,
//! needs, the kernel × shard matrix, caches, artefacts, the static build agreeing with
//! `agelab lab`'s), and its commands: the probe, shard and merge steps' scripts run verbatim
//! here, on a small matrix, as the workflow's jobs run them.

mod lab_support;

use lab_support::skip;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn workflow() -> Yaml {
    let text = std::fs::read_to_string(workspace().join(".github/workflows/lab.yml")).unwrap();
    YamlLoader::load_from_str(&text)
        .expect("lab.yml is valid YAML")
        .remove(0)
}

fn s(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {y:?}"))
}

/// The step of `job` with `id`.
fn step<'a>(job: &'a Yaml, id: &str) -> &'a Yaml {
    job["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|st| st["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("no step with id {id}"))
}

/// Steps of `job` that use `action` (e.g. `actions/cache`), any version.
fn uses<'a>(job: &'a Yaml, action: &str) -> Vec<&'a Yaml> {
    job["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|st| {
            st["uses"]
                .as_str()
                .is_some_and(|u| u.split('@').next() == Some(action))
        })
        .collect()
}

/// The shard count: the `N` of the shard step's `LAB_SHARD: ${{ matrix.shard }}/N`.
fn shard_count(wf: &Yaml) -> usize {
    let spec = s(&step(&wf["jobs"]["shards"], "shard")["env"]["LAB_SHARD"]);
    spec.strip_prefix("${{ matrix.shard }}/")
        .unwrap_or_else(|| panic!("LAB_SHARD {spec}"))
        .parse()
        .unwrap()
}

#[test]
fn workflow_structure() {
    let wf = workflow();
    let jobs = wf["jobs"].as_hash().unwrap();
    let names: Vec<&str> = jobs.keys().map(s).collect();
    assert_eq!(names, ["build", "shards", "merge"]);
    let (build, shards, merge) = (
        &wf["jobs"]["build"],
        &wf["jobs"]["shards"],
        &wf["jobs"]["merge"],
    );
    assert_eq!(s(&shards["needs"]), "build");
    assert_eq!(s(&merge["needs"]), "shards");
    // The merge runs when shards failed (a failing cell fails its job), not when cancelled.
    assert_eq!(s(&merge["if"]), "${{ !cancelled() }}");

    // kernel × shard: the kernels `make test` runs the matrix on, shards 1..=N.
    let matrix = &shards["strategy"]["matrix"];
    assert_eq!(shards["strategy"]["fail-fast"].as_bool(), Some(false));
    let makefile = std::fs::read_to_string(workspace().join("Makefile")).unwrap();
    let test_kernels = makefile
        .lines()
        .find_map(|l| l.strip_prefix("LAB_TEST_KERNELS ?= "))
        .unwrap();
    let kernels: Vec<&str> = matrix["kernel"].as_vec().unwrap().iter().map(s).collect();
    assert_eq!(kernels.join(","), test_kernels);
    let n = shard_count(&wf);
    let shard_list: Vec<i64> = matrix["shard"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|y| y.as_i64().unwrap())
        .collect();
    assert_eq!(shard_list, (1..=n as i64).collect::<Vec<_>>());
    assert!(s(&shards["name"]).ends_with(&format!("/{n}")));

    // The matrix file exists; the kernel cache is restored per kernel.
    assert!(workspace().join(s(&wf["env"]["LAB_MATRIX"])).is_file());
    let caches = uses(shards, "actions/cache");
    assert_eq!(caches.len(), 1);
    assert_eq!(s(&caches[0]["with"]["path"]), "~/.cache/agelab");
    assert!(s(&caches[0]["with"]["key"]).contains("${{ matrix.kernel }}"));
    assert!(shards["container"]["options"]
        .as_str()
        .unwrap()
        .contains("/dev/kvm"));

    // Built once with agelab lab's own static build, downloaded by shards and merge.
    let cmd = s(&step(build, "build")["run"]);
    assert_eq!(
        cmd,
        format!(
            "cargo {} x86_64-unknown-linux-gnu --target-dir target/lab",
            agelab_lab::STATIC_BUILD_ARGS.join(" ")
        )
    );
    assert_eq!(
        s(&step(build, "build")["env"]["RUSTFLAGS"]),
        agelab_lab::STATIC_RUSTFLAGS
    );
    let uploaded = uses(build, "actions/upload-artifact");
    assert_eq!(s(&uploaded[0]["with"]["name"]), "lab-bins");
    for job in [shards, merge] {
        assert!(uses(job, "actions/download-artifact")
            .iter()
            .any(|st| st["with"]["name"].as_str() == Some("lab-bins")));
    }

    // Each shard uploads its results directory, also when cells failed; the merge downloads
    // them all.
    let up = uses(shards, "actions/upload-artifact");
    assert_eq!(up.len(), 1);
    assert_eq!(s(&up[0]["if"]), "${{ !cancelled() }}");
    assert_eq!(s(&up[0]["with"]["path"]), "lab-results/");
    assert!(s(&step(shards, "shard")["run"]).ends_with("--results lab-results"));
    assert!(s(&up[0]["with"]["name"]).starts_with("lab-results-"));
    assert!(uses(merge, "actions/download-artifact")
        .iter()
        .any(|st| st["with"]["pattern"].as_str() == Some("lab-results-*")
            && st["with"]["path"].as_str() == Some("shards")));
    assert!(s(&step(merge, "merge")["run"]).contains(" shards/*/*/"));
}

/// A step's `env`, with the workflow expressions a job would fill in replaced by `values`.
fn step_env(st: &Yaml, values: &BTreeMap<&str, String>) -> Vec<(String, String)> {
    st["env"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let mut v = match v {
                Yaml::Integer(i) => i.to_string(),
                v => s(v).to_string(),
            };
            for (expr, value) in values {
                v = v.replace(&format!("${{{{ {expr} }}}}"), value);
            }
            assert!(!v.contains("${{"), "unfilled expression in {v}");
            (s(k).to_string(), v)
        })
        .collect()
}

/// Runs a step's script as the job does (bash -eo pipefail) in `cwd` with `env`.
fn run_step(st: &Yaml, cwd: &Path, env: &[(String, String)]) -> std::process::Output {
    let script = s(&st["run"]);
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    eprintln!(
        "step {:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        st["id"].as_str(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The workflow's probe, shard and merge steps, verbatim, on a four-test matrix split into the
/// workflow's N shards on one kernel, the shards' results laid out as the merge job downloads
/// them: the merge has every cell once, with the outcomes the tests are built to give.
#[test]
fn workflow_commands_shard_and_merge_a_matrix() {
    if skip() {
        return;
    }
    let wf = workflow();
    let n = shard_count(&wf);
    let work = std::env::temp_dir().join(format!("agelab-lab-ci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("bins")).unwrap();
    let matrix = work.join("matrix.txt");
    std::fs::write(
        &matrix,
        "ok-true -- true\n\
         ok-ktap -- printf 'KTAP version 1\\n1..1\\nok 1 inner\\n'\n\
         skipped -- exit 4\n\
         designed --expect-fail debian-7.2 -- false\n",
    )
    .unwrap();
    let mut globals: Vec<(String, String)> = vec![
        ("LAB_MATRIX".into(), matrix.display().to_string()),
        ("LAB_BINS".into(), work.join("bins").display().to_string()),
        ("AGELAB".into(), env!("CARGO_BIN_EXE_agelab").into()),
    ];
    let workflow_env: Vec<String> = wf["env"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| s(k).to_string())
        .collect();
    assert_eq!(workflow_env, ["LAB_MATRIX", "LAB_BINS", "AGELAB"]);
    let shards = &wf["jobs"]["shards"];
    let kernel = "debian-7.2";
    let output = work.join("github-output");
    globals.push(("GITHUB_OUTPUT".into(), output.display().to_string()));
    let mut values = BTreeMap::from([("matrix.kernel", kernel.to_string())]);
    let probe = step(shards, "probe");
    let mut env = globals.clone();
    env.extend(step_env(probe, &values));
    assert!(run_step(probe, &work, &env).status.success());
    let probed = std::fs::read_to_string(&output).unwrap();
    let accel = probed.trim().strip_prefix("accel=").unwrap().to_string();
    assert!(accel == "kvm" || accel == "tcg", "{probed}");
    values.insert("steps.probe.outputs.accel", accel);
    for k in 1..=n {
        values.insert("matrix.shard", k.to_string());
        let st = step(shards, "shard");
        let mut env = globals.clone();
        env.extend(step_env(st, &values));
        let job = work.join(format!("job-{k}"));
        std::fs::create_dir_all(&job).unwrap();
        let out = run_step(st, &job, &env);
        assert_eq!(out.status.code(), Some(0), "shard {k}/{n}");
        // actions/upload-artifact of lab-results/, downloaded into shards/NAME/.
        let artefact = work
            .join("shards")
            .join(format!("lab-results-{kernel}-{k}"));
        std::fs::create_dir_all(artefact.parent().unwrap()).unwrap();
        std::fs::rename(job.join("lab-results"), &artefact).unwrap();
    }
    let merge = step(&wf["jobs"]["merge"], "merge");
    let out = run_step(merge, &work, &globals);
    assert_eq!(out.status.code(), Some(0));
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("merged/results.json")).unwrap())
            .unwrap();
    let cells: Vec<(String, String)> = merged["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["test"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            ("ok-true".into(), "pass".into()),
            ("ok-ktap".into(), "pass".into()),
            ("skipped".into(), "skip".into()),
            ("designed".into(), "expected-fail".into()),
        ]
    );
    assert_eq!(merged["merged_from"].as_array().unwrap().len(), n);
    for f in [
        "junit.xml",
        "index.html",
        "results.ktap",
        "table.txt",
        "cell-durations.txt",
    ] {
        assert!(work.join("merged").join(f).is_file(), "{f}");
    }
    let ktap = std::fs::read_to_string(work.join("merged/results.ktap")).unwrap();
    assert!(ktap.contains("        ok 1 inner\n"), "{ktap}");
    // A shard missing: the merge fails naming its cell.
    std::fs::remove_dir_all(work.join("merged")).unwrap();
    std::fs::remove_dir_all(work.join("shards").join(format!("lab-results-{kernel}-1"))).unwrap();
    let out = run_step(merge, &work, &globals);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cell(s) missing: debian-7.2 / "));
    std::fs::remove_dir_all(&work).unwrap();
}
