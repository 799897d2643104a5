//! The planner replayed from data, with injected time.
//!
//! Each `*.json` file in `src/watch/decide/cases/` is one scenario (a *case*), read
//! at test time: a new case needs no Rust change. `every_case_replays` drives a fresh
//! [`Planner`] through each case's steps and stops a case at its first mismatch,
//! naming the file, the step (1-based) and what was wanted against what happened.
//! `every_check_in_every_case_can_fail` changes each check of each case in turn and
//! makes sure the replay then fails at that very step.
//!
//! The format is described in `src/watch/decide/cases/README.md`.

use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The case files.
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/watch/decide/cases");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The facts of version `size` of a run file.
fn facts(size: u64) -> Facts {
    Facts {
        size,
        mtime_ns: 1_000 + size as u128,
        ino: 7,
        ctime_ns: 1_000 + size as u128,
    }
}

fn run_path(id: &str) -> PathBuf {
    PathBuf::from(format!("runs/{id}.safetensors"))
}

// ---- The file format, as written ----

/// `Some` for a key that is there, even as `null`: tells `"due": null` from no `due`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    about: String,
    #[serde(default)]
    policy: PolicySpec,
    /// Parsed one by one, so that an error names its step.
    steps: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    retry_ms: Option<Vec<u64>>,
    prune: Option<bool>,
    io_retry_ms: Option<(u64, u64)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Option<u64>,
    observe: Option<RawSeen>,
    done: Option<RawDone>,
    tick: Option<bool>,
    want: Option<Vec<String>>,
    expect: Option<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeen {
    run: String,
    size: Option<u64>,
    #[serde(default)]
    up_to_date: bool,
    has_gallery: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDone {
    run: String,
    outcome: Option<String>,
    #[serde(default, deserialize_with = "present")]
    failed: Option<Option<u64>>,
    message: Option<String>,
    retry: Option<String>,
    /// With `retry`: the version of the file the attempt saw.
    size: Option<u64>,
}

/// The checks after a step; `None`: not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    idle: Option<bool>,
    busy: Option<usize>,
    #[serde(default, deserialize_with = "present")]
    due: Option<Option<u64>>,
    failures: Option<BTreeMap<String, usize>>,
}

impl Expect {
    fn is_empty(&self) -> bool {
        self.idle.is_none()
            && self.busy.is_none()
            && self.due.is_none()
            && self.failures.as_ref().is_none_or(|f| f.is_empty())
    }
}

// ---- A case, ready to replay ----

#[derive(Debug, Clone)]
struct Case {
    name: String,
    policy: Policy,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct Step {
    /// Milliseconds since the start.
    at: u64,
    /// The step as written (keys sorted), for messages.
    text: String,
    /// The event and the actions it must return.
    event: Option<(Event, Vec<String>)>,
    expect: Expect,
}

#[derive(Debug, Clone)]
enum Event {
    Observe(Observation),
    Done(String, Outcome),
    Tick,
}

/// Reads case file `name` (`text`), or says what is wrong with it.
fn parse(name: &str, text: &str) -> Result<Case, String> {
    let file: CaseFile = serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    if file.about.trim().is_empty() {
        return Err(format!("{name}: `about` is empty"));
    }
    if file.steps.is_empty() {
        return Err(format!("{name}: no steps"));
    }
    let d = Policy::default();
    let p = file.policy;
    let policy = Policy {
        retry_delays: p
            .retry_ms
            .map_or(d.retry_delays, |v| v.into_iter().map(ms).collect()),
        prune: p.prune.unwrap_or(d.prune),
        io_retry: p.io_retry_ms.map_or(d.io_retry, |(a, b)| (ms(a), ms(b))),
    };
    let mut at = 0;
    let mut steps = Vec::with_capacity(file.steps.len());
    for (i, value) in file.steps.into_iter().enumerate() {
        let text = value.to_string();
        let step = serde_json::from_value(value)
            .map_err(|e| e.to_string())
            .and_then(|raw| step(raw, &mut at, text.clone()))
            .map_err(|e| format!("{name}, step {}: {e}\n  {text}", i + 1))?;
        steps.push(step);
    }
    Ok(Case {
        name: name.to_string(),
        policy,
        steps,
    })
}

fn step(raw: RawStep, at: &mut u64, text: String) -> Result<Step, String> {
    if let Some(t) = raw.at {
        if t < *at {
            return Err(format!("`at` goes back from {} to {t}", *at));
        }
        *at = t;
    }
    let mut events = vec![];
    if let Some(o) = raw.observe {
        events.push(Event::Observe(Observation {
            path: run_path(&o.run),
            id: o.run,
            source: o.size.map(facts),
            up_to_date: o.up_to_date,
            has_gallery: o.has_gallery.unwrap_or(o.up_to_date),
        }));
    }
    if let Some(d) = raw.done {
        events.push(Event::Done(d.run.clone(), outcome(d)?));
    }
    match raw.tick {
        Some(true) => events.push(Event::Tick),
        Some(false) => return Err("`tick` is `true` or absent".into()),
        None => {}
    }
    if events.len() > 1 {
        return Err("one event per step: `observe`, `done` or `tick`".into());
    }
    let expect = raw.expect.unwrap_or_default();
    let event = match (events.pop(), raw.want) {
        (Some(e), Some(want)) => Some((e, want)),
        (Some(_), None) => {
            return Err("an event needs `want`: the actions it returns, `[]` for none".into())
        }
        (None, Some(_)) => return Err("`want` without an event".into()),
        (None, None) if expect.is_empty() => {
            return Err("a step without an event needs `expect` with a check".into())
        }
        (None, None) => None,
    };
    Ok(Step {
        at: *at,
        text,
        event,
        expect,
    })
}

fn outcome(d: RawDone) -> Result<Outcome, String> {
    let given = [d.outcome.is_some(), d.failed.is_some(), d.retry.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("`done` takes one of `outcome`, `failed` or `retry`".into());
    }
    if d.message.is_some() && d.failed.is_none() {
        return Err("`message` goes with `failed`".into());
    }
    if d.size.is_some() && d.retry.is_none() {
        return Err("`size` goes with `retry`".into());
    }
    if let Some(size) = d.failed {
        let message = d.message.unwrap_or_else(|| match size {
            Some(n) => format!("truncated at {n}"),
            None => "no file".into(),
        });
        return Ok(Outcome::Failed {
            facts: size.map(facts),
            message,
        });
    }
    if let Some(message) = d.retry {
        return Ok(Outcome::Retry {
            facts: d.size.map(facts),
            message,
        });
    }
    match d.outcome.as_deref() {
        Some("rendered") => Ok(Outcome::Rendered),
        Some("error_page") => Ok(Outcome::ErrorPage),
        Some("pruned") => Ok(Outcome::Pruned),
        Some("vanished") => Ok(Outcome::Vanished),
        Some("changed") => Ok(Outcome::Changed),
        other => Err(format!(
            "unknown outcome {other:?}: rendered, error_page, pruned, vanished or changed \
             (`failed` and `retry` are keys of their own)"
        )),
    }
}

/// Every case file, sorted by name; panics naming every file that does not parse.
fn load_all() -> Vec<Case> {
    let dir = Path::new(CASES);
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names = vec![];
    for entry in entries {
        let path = entry.expect("a case file").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        assert!(
            name.ends_with(".json") && path.is_file(),
            "{}: not a case file (only *.json and README.md belong here)",
            path.display()
        );
        names.push(name);
    }
    names.sort();
    assert!(!names.is_empty(), "{}: no case files", dir.display());
    let (mut cases, mut errors) = (vec![], vec![]);
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).expect("a readable case file");
        match parse(&name, &text) {
            Ok(c) => cases.push(c),
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "bad case files:\n{}", errors.join("\n"));
    cases
}

// ---- Replay ----

/// An action as the case files write it.
fn show(a: &Action) -> String {
    let (id, path, shown) = match a {
        Action::Start(Task { id, path, job }) => {
            let shown = match job {
                Job::Render => format!("render {id}"),
                Job::Prune => format!("prune {id}"),
                Job::ErrorPage { facts: f, message } => {
                    let seen = match f {
                        None => "no file".to_string(),
                        Some(f) if *f == facts(f.size) => format!("size {}", f.size),
                        Some(f) => format!("{f:?}"),
                    };
                    format!("error_page {id} ({seen}): {message}")
                }
            };
            (id, path, shown)
        }
        Action::Recheck { id, path } => (id, path, format!("recheck {id}")),
    };
    if *path == run_path(id) {
        shown
    } else {
        format!("{shown} [at {}]", path.display())
    }
}

fn show_ms(t: Option<u64>) -> String {
    t.map_or("null".into(), |t| format!("{t} ms"))
}

/// Where a replay went wrong.
#[derive(Debug)]
struct Mismatch {
    /// 1-based.
    step: usize,
    what: String,
}

/// Drives a fresh planner through `case`; stops at the first step that differs.
fn replay(case: &Case) -> Result<(), Mismatch> {
    let t0 = Instant::now();
    let mut p = Planner::new(case.policy.clone());
    for (i, s) in case.steps.iter().enumerate() {
        let mismatch = |what: String| Mismatch {
            step: i + 1,
            what: format!("{}\n  {what}", s.text),
        };
        let now = t0 + ms(s.at);
        if let Some((event, want)) = &s.event {
            let got = match event.clone() {
                Event::Observe(o) => p.observe(o, now),
                Event::Done(id, outcome) => p.done(&id, outcome, now),
                Event::Tick => p.tick(now),
            };
            let got: Vec<String> = got.iter().map(show).collect();
            if got != *want {
                return Err(mismatch(format!(
                    "actions differ\n    want: {want:?}\n    got:  {got:?}"
                )));
            }
        }
        check(&p, t0, &s.expect).map_err(mismatch)?;
    }
    Ok(())
}

fn check(p: &Planner, t0: Instant, e: &Expect) -> Result<(), String> {
    let mut bad = vec![];
    if let Some(want) = e.idle {
        let got = p.is_idle();
        if got != want {
            bad.push(format!("idle: want {want}, got {got}"));
        }
    }
    if let Some(want) = e.busy {
        let got = p.busy();
        if got != want {
            bad.push(format!("busy: want {want}, got {got}"));
        }
    }
    if let Some(want) = e.due {
        let got = p
            .next_due()
            .map(|d| d.duration_since(t0).as_millis() as u64);
        if got != want {
            bad.push(format!("due: want {}, got {}", show_ms(want), show_ms(got)));
        }
    }
    for (id, &want) in e.failures.iter().flatten() {
        let got = p.failures(id);
        if got != want {
            bad.push(format!("failures of {id}: want {want}, got {got}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n  "))
    }
}

#[test]
fn every_case_replays() {
    let cases = load_all();
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            replay(c)
                .err()
                .map(|m| format!("{}, step {}: {}", c.name, m.step, m.what))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases in {CASES} failed:\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}

// ---- The runner itself ----

/// Copies of `s`, each with one check changed, and what was changed.
fn mutants(s: &Step) -> Vec<(String, Step)> {
    let mut out = vec![];
    let mut with = |what: String, f: &dyn Fn(&mut Step)| {
        let mut m = s.clone();
        f(&mut m);
        out.push((what, m));
    };
    if let Some((_, want)) = &s.event {
        with("one more wanted action".into(), &|m| {
            m.event.as_mut().unwrap().1.push("render someone".into())
        });
        for j in 0..want.len() {
            with(format!("wanted action {} left out", j + 1), &|m| {
                m.event.as_mut().unwrap().1.remove(j);
            });
            with(format!("wanted action {} changed", j + 1), &|m| {
                m.event.as_mut().unwrap().1[j].push('~')
            });
        }
    }
    if let Some(idle) = s.expect.idle {
        with("idle".into(), &|m| m.expect.idle = Some(!idle));
    }
    if let Some(busy) = s.expect.busy {
        with("busy".into(), &|m| m.expect.busy = Some(busy + 1));
    }
    if let Some(due) = s.expect.due {
        with("due".into(), &|m| {
            m.expect.due = Some(due.map_or(Some(0), |d| Some(d + 1)))
        });
        if due.is_some() {
            with("due (to null)".into(), &|m| m.expect.due = Some(None));
        }
    }
    for id in s.expect.failures.iter().flatten().map(|(id, _)| id) {
        with(format!("failures of {id}"), &|m| {
            *m.expect.failures.as_mut().unwrap().get_mut(id).unwrap() += 1
        });
    }
    out
}

#[test]
fn every_check_in_every_case_can_fail() {
    let mut unnoticed = vec![];
    let mut mutations = 0;
    // A case that fails as written is `every_case_replays`'s to report.
    for case in load_all().into_iter().filter(|c| replay(c).is_ok()) {
        for (i, step) in case.steps.iter().enumerate() {
            for (what, mutant) in mutants(step) {
                mutations += 1;
                let mut c = case.clone();
                c.steps[i] = mutant;
                let got = match replay(&c) {
                    Err(m) if m.step == i + 1 => continue,
                    Err(m) => format!("failed at step {} instead", m.step),
                    Ok(()) => "still passed".into(),
                };
                unnoticed.push(format!("{}, step {}: {what}: {got}", case.name, i + 1));
            }
        }
    }
    assert!(mutations > 0);
    assert!(
        unnoticed.is_empty(),
        "checks that cannot fail:\n{}",
        unnoticed.join("\n")
    );
}

// long: a table of malformed inputs, one line each.
#[test]
fn malformed_cases_are_rejected() {
    let bad = [
        (
            r#"{"steps": [{"tick": true, "want": []}]}"#,
            "missing field `about`",
        ),
        (r#"{"about": "a", "steps": []}"#, "no steps"),
        (
            r#"{"about": "a", "polcy": {}, "steps": []}"#,
            "unknown field `polcy`",
        ),
        (
            r#"{"about": "a", "policy": {"retry": [1]}, "steps": []}"#,
            "unknown field `retry`",
        ),
        (
            r#"{"about": "a", "steps": [{"tick": true}]}"#,
            "needs `want`",
        ),
        (
            r#"{"about": "a", "steps": [{"tick": true, "wnat": []}]}"#,
            "unknown field `wnat`",
        ),
        (
            r#"{"about": "a", "steps": [{"want": []}]}"#,
            "without an event",
        ),
        (r#"{"about": "a", "steps": [{"at": 5}]}"#, "needs `expect`"),
        (
            r#"{"about": "a", "steps": [{"expect": {"failures": {}}}]}"#,
            "needs `expect`",
        ),
        (
            r#"{"about": "a", "steps": [{"expect": {"idel": true}}]}"#,
            "unknown field `idel`",
        ),
        (
            r#"{"about": "a", "steps": [{"tick": false, "want": []}]}"#,
            "`tick` is `true`",
        ),
        (
            r#"{"about": "a", "steps": [{"tick": true, "observe": {"run": "a"}, "want": []}]}"#,
            "one event per step",
        ),
        (
            r#"{"about": "a", "steps": [{"at": 5, "tick": true, "want": []}, {"at": 4, "tick": true, "want": []}]}"#,
            "step 2: `at` goes back from 5 to 4",
        ),
        (
            r#"{"about": "a", "steps": [{"done": {"run": "a", "outcome": "renderd"}, "want": []}]}"#,
            "unknown outcome",
        ),
        (
            r#"{"about": "a", "steps": [{"done": {"run": "a", "outcome": "rendered", "failed": 1}, "want": []}]}"#,
            "one of `outcome`, `failed` or `retry`",
        ),
        (
            r#"{"about": "a", "steps": [{"done": {"run": "a"}, "want": []}]}"#,
            "one of `outcome`, `failed` or `retry`",
        ),
        (
            r#"{"about": "a", "steps": [{"done": {"run": "a", "retry": "x", "message": "y"}, "want": []}]}"#,
            "`message` goes with `failed`",
        ),
        (
            r#"{"about": "a", "steps": [{"observe": {"run": "a", "sise": 1}, "want": []}]}"#,
            "unknown field `sise`",
        ),
    ];
    for (text, needle) in bad {
        match parse("inline.json", text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert!(e.contains(needle), "{text}\n  said: {e}\n  want: {needle}"),
        }
    }
    // `"failed": null` (the attempt saw no file) is not a missing `failed`.
    let ok = r#"{"about": "a", "steps": [{"done": {"run": "a", "failed": null}, "want": []}]}"#;
    let case = parse("inline.json", ok).unwrap();
    assert!(matches!(
        &case.steps[0].event,
        Some((Event::Done(_, Outcome::Failed { facts: None, message }), _)) if message == "no file"
    ));
}
