//! The planner driven with plain data and injected time.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn facts(size: u64) -> Option<Facts> {
    Some(Facts {
        size,
        mtime_ns: 1_000 + size as u128,
        ino: 7,
        ctime_ns: 1_000 + size as u128,
    })
}

fn seen(id: &str, source: Option<Facts>, up_to_date: bool) -> Observation {
    Observation {
        id: id.into(),
        path: PathBuf::from(format!("runs/{id}.safetensors")),
        source,
        up_to_date,
        has_gallery: up_to_date,
    }
}

fn render(id: &str) -> Action {
    Action::Start(Task {
        id: id.into(),
        path: PathBuf::from(format!("runs/{id}.safetensors")),
        job: Job::Render,
    })
}

fn failed(size: u64) -> Outcome {
    Outcome::Failed {
        facts: facts(size),
        message: format!("truncated at {size}"),
    }
}

#[test]
fn new_and_changed_runs_are_rendered_finished_ones_skipped() {
    let t = Instant::now();
    let mut p = Planner::default();
    assert_eq!(p.observe(seen("a", facts(10), false), t), vec![render("a")]);
    assert_eq!(p.observe(seen("b", facts(10), true), t), vec![]);
    assert_eq!(p.observe(seen("c", None, false), t), vec![]);
    assert_eq!(p.busy(), 1);
    assert_eq!(p.done("a", Outcome::Rendered, t), vec![]);
    assert!(p.is_idle());
    // The same run changed later: rendered again.
    assert_eq!(p.observe(seen("a", facts(11), false), t), vec![render("a")]);
}

#[test]
fn a_busy_run_is_never_started_twice_and_is_rechecked_once_after() {
    let t = Instant::now();
    let mut p = Planner::default();
    assert_eq!(p.observe(seen("a", facts(10), false), t).len(), 1);
    for size in [10, 11, 12] {
        assert_eq!(p.observe(seen("a", facts(size), false), t), vec![]);
    }
    assert_eq!(
        p.done("a", Outcome::Rendered, t),
        vec![Action::Recheck {
            id: "a".into(),
            path: "runs/a.safetensors".into()
        }]
    );
    // The recheck shows it up to date: nothing more.
    assert_eq!(p.observe(seen("a", facts(12), true), t), vec![]);
    assert!(p.is_idle());
}

#[test]
fn a_stable_broken_file_gets_an_error_page_after_the_retries() {
    let t = Instant::now();
    let mut p = Planner::default();
    let mut now = t;
    assert_eq!(p.observe(seen("x", facts(5), false), now).len(), 1);
    for (attempt, wait) in [250u64, 500, 1000].into_iter().enumerate() {
        assert_eq!(p.done("x", failed(5), now), vec![], "attempt {attempt}");
        assert_eq!(p.next_due(), Some(now + ms(wait)));
        // Not yet due: nothing.
        assert_eq!(p.tick(now + ms(wait - 1)), vec![]);
        now += ms(wait);
        assert_eq!(p.tick(now), vec![render("x")]);
    }
    let actions = p.done("x", failed(5), now);
    assert_eq!(
        actions,
        vec![Action::Start(Task {
            id: "x".into(),
            path: "runs/x.safetensors".into(),
            job: Job::ErrorPage {
                facts: facts(5),
                message: "truncated at 5".into()
            }
        })]
    );
    assert_eq!(p.done("x", Outcome::ErrorPage, now), vec![]);
    assert!(p.is_idle());
    // The error page is up to date for these facts: no more attempts.
    assert_eq!(p.observe(seen("x", facts(5), true), now), vec![]);
}

#[test]
fn a_growing_file_restarts_the_count_and_never_gets_an_error_page() {
    let t = Instant::now();
    let mut p = Planner::default();
    let mut now = t;
    p.observe(seen("g", facts(1), false), now);
    // Each attempt sees a bigger file: always the first failure.
    for size in 1..50 {
        let actions = p.done("g", failed(size), now);
        assert!(
            actions.iter().all(|a| matches!(
                a,
                Action::Start(Task {
                    job: Job::Render,
                    ..
                })
            )),
            "{actions:?}"
        );
        assert_eq!(p.failures("g"), 1);
        now += ms(250);
        assert_eq!(p.tick(now), vec![render("g")]);
    }
    assert_eq!(p.done("g", Outcome::Rendered, now), vec![]);
    assert!(p.is_idle());
}

#[test]
fn an_event_while_waiting_resets_the_count_and_delays_the_retry() {
    let t = Instant::now();
    let mut p = Planner::default();
    p.observe(seen("g", facts(1), false), t);
    p.done("g", failed(1), t);
    p.tick(t + ms(250));
    p.done("g", failed(1), t + ms(250));
    assert_eq!(p.failures("g"), 2);
    // The same facts again (a duplicate event): the timer is kept.
    assert_eq!(p.observe(seen("g", facts(1), false), t + ms(300)), vec![]);
    assert_eq!(p.next_due(), Some(t + ms(750)));
    // It grew: the count restarts, the retry waits for a quiet time.
    assert_eq!(p.observe(seen("g", facts(2), false), t + ms(400)), vec![]);
    assert_eq!(p.failures("g"), 0);
    assert_eq!(p.next_due(), Some(t + ms(650)));
}

#[test]
fn no_error_page_when_the_file_changed_during_the_last_attempt() {
    let t = Instant::now();
    let mut p = Planner::new(Policy {
        retry_delays: vec![ms(10)],
        prune: false,
        ..Policy::default()
    });
    p.observe(seen("x", facts(5), false), t);
    p.done("x", failed(5), t);
    p.tick(t + ms(10));
    // An event arrives during the second attempt.
    p.observe(seen("x", facts(6), false), t + ms(11));
    assert_eq!(p.done("x", failed(5), t + ms(12)), vec![]);
    assert_eq!(p.next_due(), Some(t + ms(22)));
}

#[test]
fn a_change_under_a_render_waits_then_renders_again() {
    let t = Instant::now();
    let mut p = Planner::default();
    p.observe(seen("a", facts(1), false), t);
    assert_eq!(p.done("a", Outcome::Changed, t), vec![]);
    assert_eq!(p.tick(t + ms(250)), vec![render("a")]);
}

#[test]
fn deleted_runs_keep_their_gallery_unless_pruning() {
    let t = Instant::now();
    let gone = Observation {
        id: "d".into(),
        path: "runs/d.safetensors".into(),
        source: None,
        up_to_date: false,
        has_gallery: true,
    };
    let mut keep = Planner::default();
    assert_eq!(keep.observe(gone.clone(), t), vec![]);
    let mut prune = Planner::new(Policy {
        prune: true,
        ..Policy::default()
    });
    assert_eq!(
        prune.observe(gone.clone(), t),
        vec![Action::Start(Task {
            id: "d".into(),
            path: "runs/d.safetensors".into(),
            job: Job::Prune
        })]
    );
    assert_eq!(prune.done("d", Outcome::Pruned, t), vec![]);
    // Without a gallery there is nothing to prune.
    let no_gallery = Observation {
        has_gallery: false,
        ..gone
    };
    assert_eq!(prune.observe(no_gallery, t), vec![]);
}

#[test]
fn a_run_deleted_while_waiting_is_forgotten() {
    let t = Instant::now();
    let mut p = Planner::default();
    p.observe(seen("x", facts(5), false), t);
    p.done("x", failed(5), t);
    assert_eq!(p.observe(seen("x", None, false), t), vec![]);
    assert!(p.is_idle());
    assert_eq!(p.tick(t + Duration::from_secs(5)), vec![]);
}

#[test]
fn vanished_runs_are_rechecked_and_failed_error_pages_give_up() {
    let t = Instant::now();
    let mut p = Planner::new(Policy {
        retry_delays: vec![],
        prune: false,
        ..Policy::default()
    });
    p.observe(seen("v", facts(1), false), t);
    assert_eq!(
        p.done("v", Outcome::Vanished, t),
        vec![Action::Recheck {
            id: "v".into(),
            path: "runs/v.safetensors".into()
        }]
    );
    // No retries configured: the first failure writes the error page; if that
    // fails too, the planner gives up.
    p.observe(seen("e", facts(1), false), t);
    let a = p.done("e", failed(1), t);
    assert!(matches!(
        &a[..],
        [Action::Start(Task {
            job: Job::ErrorPage { .. },
            ..
        })]
    ));
    assert_eq!(p.done("e", failed(1), t), vec![]);
    assert!(p.is_idle());
}

#[test]
fn io_failures_back_off_and_never_write_an_error_page() {
    let t = Instant::now();
    let mut p = Planner::default();
    let mut now = t;
    p.observe(seen("x", facts(5), false), now);
    // Far more I/O failures than render retries: waits grow to the cap, and
    // every retry is a render, never an error page.
    for (n, wait) in [1u64, 2, 4, 8, 16, 32, 60, 60, 60].into_iter().enumerate() {
        let out = Outcome::Retry {
            message: format!("no space ({n})"),
        };
        assert_eq!(p.done("x", out, now), vec![]);
        assert_eq!(p.next_due(), Some(now + Duration::from_secs(wait)));
        now += Duration::from_secs(wait);
        assert_eq!(p.tick(now), vec![render("x")]);
    }
    // Space is back: rendered, forgotten.
    assert_eq!(p.done("x", Outcome::Rendered, now), vec![]);
    assert!(p.is_idle());
}

#[test]
fn a_failed_error_page_for_lack_of_space_is_tried_again() {
    let t = Instant::now();
    let mut p = Planner::new(Policy {
        retry_delays: vec![],
        ..Policy::default()
    });
    p.observe(seen("e", facts(1), false), t);
    let a = p.done("e", failed(1), t);
    assert!(matches!(
        &a[..],
        [Action::Start(Task {
            job: Job::ErrorPage { .. },
            ..
        })]
    ));
    let retry = Outcome::Retry {
        message: "no space".into(),
    };
    assert_eq!(p.done("e", retry, t), vec![]);
    assert!(!p.is_idle());
    assert_eq!(p.tick(t + Duration::from_secs(1)), vec![render("e")]);
}

#[test]
fn unknown_completions_are_ignored() {
    let mut p = Planner::default();
    assert_eq!(p.done("nobody", Outcome::Rendered, Instant::now()), vec![]);
    assert!(p.is_idle());
}
