//! Switching a service from its running container to a new one, and undoing or finishing a switch
//! that was cut short, as sequences of engine operations decided from what the engine shows.
//!
//! A service's containers sit in three slots: its own name (live), `<name>-kicky-new` (staged: a
//! new container not switched in yet) and `<name>-kicky-old` (aside: the previous container,
//! kept until the new one has proved healthy). The forward switch only ever moves containers
//! between these slots, and while the live container is stopped by the agent there is always a
//! staged or an aside container beside it. So whatever moment the agent dies at (SIGKILL, the
//! watchdog, a reboot), the slots alone say what was going on, and [`recover`] puts the last good
//! container back (or, when the new one is already serving healthy, finishes the switch). A
//! rollback is the same undo, asked for while the sync still runs.

use std::time::{Duration, SystemTime};

use super::api::{Container, Health};
use super::health::SETTLE;

pub const NEW_SUFFIX: &str = "-kicky-new";
pub const OLD_SUFFIX: &str = "-kicky-old";

pub fn staged_name(name: &str) -> String {
    format!("{name}{NEW_SUFFIX}")
}

pub fn aside_name(name: &str) -> String {
    format!("{name}{OLD_SUFFIX}")
}

/// One engine operation of a switch, a recovery or a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Start {
        id: String,
        name: String,
    },
    Stop {
        id: String,
        grace: Duration,
    },
    Rename {
        id: String,
        to: String,
    },
    Remove {
        id: String,
    },
    /// Wait until the container is ready (healthy, or running a while without a healthcheck;
    /// exited 0 for a one-shot service).
    WaitReady {
        id: String,
        name: String,
    },
}

/// The containers of one service, by slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slots<'a> {
    pub live: Option<&'a Container>,
    pub staged: Option<&'a Container>,
    pub aside: Option<&'a Container>,
}

impl<'a> Slots<'a> {
    /// The slots of the container named `name` among `containers`.
    pub fn of(name: &str, containers: &'a [Container]) -> Slots<'a> {
        let find = |wanted: &str| containers.iter().find(|c| c.name == wanted);
        Slots {
            live: find(name),
            staged: find(&staged_name(name)),
            aside: find(&aside_name(name)),
        }
    }

    /// Whether a switch was cut short here.
    pub fn interrupted(&self) -> bool {
        self.staged.is_some() || self.aside.is_some()
    }
}

/// The switch from `old` (live, maybe running) to `new` (created as staged). Side by side (no
/// fixed host port), the new container starts and proves ready before the old one stops: no gap.
/// Otherwise the old one must free its ports first: stop, swap names, start.
/// The old container is kept aside; [`finish`] removes it once the whole sync is healthy.
pub fn switch(name: &str, old: &str, new: &str, side_by_side: bool, grace: Duration) -> Vec<Op> {
    let stop = Op::Stop {
        id: old.to_string(),
        grace,
    };
    let aside = Op::Rename {
        id: old.to_string(),
        to: aside_name(name),
    };
    let live = Op::Rename {
        id: new.to_string(),
        to: name.to_string(),
    };
    if side_by_side {
        vec![
            Op::Start {
                id: new.to_string(),
                name: staged_name(name),
            },
            Op::WaitReady {
                id: new.to_string(),
                name: staged_name(name),
            },
            stop,
            aside,
            live,
        ]
    } else {
        vec![
            stop,
            aside,
            live,
            Op::Start {
                id: new.to_string(),
                name: name.to_string(),
            },
        ]
    }
}

/// After a healthy sync: the previous container goes.
pub fn finish(old: &str) -> Op {
    Op::Remove {
        id: old.to_string(),
    }
}

/// What to do about the slots of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At the start of a sync, after an interruption: keep a new container that already took
    /// the name and serves healthy (finishing its switch), else undo. The sync then decides as
    /// usual: a kept container that is not what the config wants now is recreated.
    Recover,
    /// Rolling back a failed sync: always back to the previous container.
    Undo,
}

/// The operations that leave the service with one container under its name and nothing staged
/// or aside: the previous container again (undo), or the new one when `mode` is `Recover` and it
/// is ready at `now`. A one-shot service's previous container is put back but not started: it
/// has done its work.
pub fn recover(name: &str, slots: Slots, one_shot: bool, mode: Mode, now: SystemTime) -> Vec<Op> {
    let remove = |c: &Container| Op::Remove { id: c.id.clone() };
    let mut ops = Vec::new();
    match slots.aside {
        // The previous container was set aside: whatever holds the name is the new one.
        Some(old) => {
            let keep_new =
                mode == Mode::Recover && slots.live.is_some_and(|new| is_ready(new, one_shot, now));
            ops.extend(slots.staged.map(remove));
            if keep_new {
                ops.push(remove(old));
            } else {
                // The new one goes first (it may hold the ports), the previous one starts while
                // still aside, and takes its name back last: cut short anywhere, the slots still
                // show a switch to undo, never a stopped container alone under the name.
                ops.extend(slots.live.map(remove));
                if !one_shot {
                    ops.push(Op::Start {
                        id: old.id.clone(),
                        name: aside_name(name),
                    });
                }
                ops.push(Op::Rename {
                    id: old.id.clone(),
                    to: name.to_string(),
                });
            }
        }
        // Only a new container beside the live one: the switch had not swapped names yet, but
        // may have stopped the previous container. It starts again before the new one goes.
        None => {
            if let Some(new) = slots.staged {
                if let Some(old) = slots.live {
                    if !old.is_running() && !one_shot {
                        ops.push(Op::Start {
                            id: old.id.clone(),
                            name: name.to_string(),
                        });
                    }
                }
                ops.push(remove(new));
            }
        }
    }
    ops
}

/// Ready as a sync's health wait would find it, judged from one look.
pub fn is_ready(c: &Container, one_shot: bool, now: SystemTime) -> bool {
    if one_shot {
        return c.completed();
    }
    if !c.is_running() {
        return false;
    }
    match c.health {
        Some(Health::Healthy) => true,
        Some(_) => false,
        None => c
            .started_at
            .is_some_and(|at| now.duration_since(at).is_ok_and(|up| up >= SETTLE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::RunState;
    use std::collections::BTreeMap;

    /// The engine, reduced to what the slots depend on: each container's name, whether it runs,
    /// and whether it would pass a health check.
    #[derive(Debug, Clone)]
    struct Model {
        containers: Vec<(Container, bool)>,
        now: SystemTime,
    }

    const NAME: &str = "orange";
    const OLD_HASH: &str = "hash-old";
    const NEW_HASH: &str = "hash-new";

    fn container(id: &str, name: &str, hash: &str, running: bool) -> Container {
        Container {
            id: id.to_string(),
            name: name.to_string(),
            labels: BTreeMap::from([(
                super::super::spec::CONFIG_HASH.to_string(),
                hash.to_string(),
            )]),
            state: if running {
                RunState::Running
            } else {
                RunState::Created
            },
            exit_code: None,
            health: None,
            last_check: None,
            started_at: None,
            image: String::new(),
            image_id: String::new(),
            ..Default::default()
        }
    }

    impl Model {
        /// `old` serving under the service's name, `new` created as staged; the new one turns
        /// healthy when started if `new_healthy`.
        fn before_switch(new_healthy: bool) -> Model {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
            let mut old = container("old", NAME, OLD_HASH, true);
            old.health = Some(Health::Healthy);
            old.started_at = Some(now - Duration::from_secs(600));
            let new = container("new", &staged_name(NAME), NEW_HASH, false);
            Model {
                containers: vec![(old, true), (new, new_healthy)],
                now,
            }
        }

        fn get(&mut self, id: &str) -> &mut (Container, bool) {
            self.containers
                .iter_mut()
                .find(|(c, _)| c.id == id)
                .unwrap_or_else(|| panic!("no container {id}"))
        }

        /// Applies one operation as the engine would; `Err` where the engine (or the health
        /// wait) would fail.
        fn apply(&mut self, op: &Op) -> Result<(), String> {
            let now = self.now;
            match op {
                Op::Start { id, .. } => {
                    let (c, healthy) = self.get(id);
                    c.state = RunState::Running;
                    c.started_at = Some(now - Duration::from_secs(5));
                    c.health = Some(if *healthy {
                        Health::Healthy
                    } else {
                        Health::Unhealthy
                    });
                }
                Op::Stop { id, .. } => {
                    let (c, _) = self.get(id);
                    c.state = RunState::Exited;
                }
                Op::Rename { id, to } => {
                    if self.containers.iter().any(|(c, _)| &c.name == to) {
                        return Err(format!("name {to} in use"));
                    }
                    self.get(id).0.name = to.clone();
                }
                Op::Remove { id } => self.containers.retain(|(c, _)| &c.id != id),
                Op::WaitReady { id, .. } => {
                    let (c, _) = self.get(id);
                    if !is_ready(c, false, now) {
                        return Err(format!("{id} not ready"));
                    }
                }
            }
            Ok(())
        }

        fn run(&mut self, ops: &[Op]) -> Result<(), String> {
            ops.iter().try_for_each(|op| self.apply(op))
        }

        fn only(&self) -> Vec<Container> {
            self.containers.iter().map(|(c, _)| c.clone()).collect()
        }

        fn recover(&mut self, mode: Mode) -> Result<(), String> {
            let containers = self.only();
            let ops = recover(NAME, Slots::of(NAME, &containers), false, mode, self.now);
            self.run(&ops)
        }

        /// The service's one container, when the slots are settled.
        fn settled(&self) -> &Container {
            let names: Vec<&str> = self
                .containers
                .iter()
                .map(|(c, _)| c.name.as_str())
                .collect();
            assert_eq!(
                names,
                vec![NAME],
                "exactly one container, under the service's name"
            );
            &self.containers[0].0
        }
    }

    fn all_switches() -> Vec<(bool, Vec<Op>)> {
        [true, false]
            .into_iter()
            .map(|side| {
                (
                    side,
                    switch(NAME, "old", "new", side, Duration::from_secs(10)),
                )
            })
            .collect()
    }

    #[test]
    fn a_whole_switch_leaves_the_new_container_live_and_the_old_one_aside() {
        for (side_by_side, ops) in all_switches() {
            let mut model = Model::before_switch(true);
            model.run(&ops).unwrap();
            let live = model.only().into_iter().find(|c| c.name == NAME).unwrap();
            assert_eq!(live.id, "new", "side by side: {side_by_side}");
            assert!(live.is_running());
            let aside = model
                .only()
                .into_iter()
                .find(|c| c.name == aside_name(NAME));
            assert_eq!(aside.map(|c| c.id), Some("old".to_string()));
        }
    }

    #[test]
    fn side_by_side_the_old_container_serves_until_the_new_one_is_ready() {
        let ops = switch(NAME, "old", "new", true, Duration::from_secs(10));
        let wait = ops
            .iter()
            .position(|op| matches!(op, Op::WaitReady { .. }))
            .unwrap();
        let stop = ops
            .iter()
            .position(|op| matches!(op, Op::Stop { .. }))
            .unwrap();
        assert!(wait < stop);
        // An unhealthy new container stops the switch before the old one is touched.
        let mut model = Model::before_switch(false);
        assert!(model.run(&ops).is_err());
        assert!(model.get("old").0.is_running());
    }

    /// The agent killed after any number of steps of a switch: the next sync's recovery leaves
    /// one container under the service's name, running, and it is the previous one unless the
    /// new one had already taken over and is healthy.
    #[test]
    fn an_interrupted_switch_is_recovered_at_every_step() {
        for (side_by_side, ops) in all_switches() {
            for new_healthy in [true, false] {
                for done in 0..=ops.len() {
                    let mut model = Model::before_switch(new_healthy);
                    // A failing step (the wait for an unhealthy container) ends the switch too.
                    let _ = model.run(&ops[..done]);
                    model.recover(Mode::Recover).unwrap();
                    let live = model.settled();
                    let case = format!(
                        "side by side {side_by_side}, healthy {new_healthy}, after {done} steps"
                    );
                    assert!(live.is_running(), "{case}: not running");
                    if live.id == "new" {
                        assert!(new_healthy, "{case}: an unhealthy new container was kept");
                        assert!(is_ready(live, false, model.now), "{case}");
                    } else {
                        assert_eq!(live.id, "old", "{case}");
                    }
                    if !new_healthy {
                        assert_eq!(live.id, "old", "{case}: the last good container serves");
                    }
                }
            }
        }
    }

    /// A switch that was whole and healthy when the agent died is finished, not undone.
    #[test]
    fn a_complete_healthy_switch_is_finished_not_undone() {
        for (_, ops) in all_switches() {
            let mut model = Model::before_switch(true);
            model.run(&ops).unwrap();
            model.recover(Mode::Recover).unwrap();
            assert_eq!(model.settled().id, "new");
        }
    }

    /// A rollback from any step (the sync failed there) brings the previous container back,
    /// running; and a rollback itself cut short is completed by the next recovery.
    #[test]
    fn a_rollback_from_every_step_restores_the_previous_container() {
        for (side_by_side, ops) in all_switches() {
            for done in 0..=ops.len() {
                let mut model = Model::before_switch(true);
                model.run(&ops[..done]).unwrap();
                let before_undo = model.clone();
                model.recover(Mode::Undo).unwrap();
                let live = model.settled();
                assert_eq!(
                    live.id, "old",
                    "side by side {side_by_side}, after {done} steps"
                );
                assert!(live.is_running());

                // The same rollback, interrupted after each of its own steps.
                let containers = before_undo.only();
                let undo = recover(
                    NAME,
                    Slots::of(NAME, &containers),
                    false,
                    Mode::Undo,
                    before_undo.now,
                );
                for cut in 0..=undo.len() {
                    let mut model = before_undo.clone();
                    model.run(&undo[..cut]).unwrap();
                    model.recover(Mode::Recover).unwrap();
                    let live = model.settled();
                    assert!(live.is_running(), "rollback cut after {cut} of {undo:?}");
                }
            }
        }
    }

    #[test]
    fn nothing_to_do_without_leftovers() {
        let model = Model::before_switch(true);
        let mut containers = model.only();
        containers.retain(|c| c.id == "old");
        let ops = recover(
            NAME,
            Slots::of(NAME, &containers),
            false,
            Mode::Recover,
            model.now,
        );
        assert!(ops.is_empty());
        assert!(!Slots::of(NAME, &containers).interrupted());
    }

    #[test]
    fn a_one_shot_service_is_put_back_but_not_run_again() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut old = container("old", &aside_name("migrate"), OLD_HASH, false);
        old.state = RunState::Exited;
        old.exit_code = Some(0);
        let mut new = container("new", "migrate", NEW_HASH, false);
        new.state = RunState::Exited;
        new.exit_code = Some(1);
        let containers = vec![old, new];
        let ops = recover(
            "migrate",
            Slots::of("migrate", &containers),
            true,
            Mode::Recover,
            now,
        );
        assert_eq!(
            ops,
            vec![
                Op::Remove { id: "new".into() },
                Op::Rename {
                    id: "old".into(),
                    to: "migrate".into()
                },
            ]
        );
        // A new one-shot container that completed is the finished switch.
        let mut done = containers.clone();
        done[1].exit_code = Some(0);
        let ops = recover(
            "migrate",
            Slots::of("migrate", &done),
            true,
            Mode::Recover,
            now,
        );
        assert_eq!(ops, vec![Op::Remove { id: "old".into() }]);
    }
}
