//! All the virtual routers of one daemon and the sync groups that bind them.
//!
//! The engine takes `(now, input)` and queues [`Action`]s in the order the driver must carry them
//! out; [`Engine::poll_timeout`] tells the driver when to call [`Engine::handle_timeout`] next.
//!
//! Sync groups (as in keepalived and VyOS): a member may become MASTER only when no member is in
//! FAULT, and then all members become MASTER together; a member stepping down to BACKUP takes the
//! other masters with it; a member in FAULT puts every member in FAULT. A move of the sync group
//! is reported once, as one [`Action::Notify`].

use std::collections::VecDeque;
use std::time::Instant;

use super::packet::{Advert, Received};
use super::router::{Effect, Reason, RouterParams, State, VirtualRouter, Want};
use super::timers::TimerQueue;

/// Index of a virtual router in the engine (the order they were given to [`Engine::new`]).
pub type GroupId = usize;
/// Index of a sync group in the engine.
pub type SyncGroupId = usize;

/// Who a notification is about: a whole sync group, or a group that belongs to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyTarget {
    SyncGroup(SyncGroupId),
    Group(GroupId),
}

/// The state a hook (transition script, BGP driver) is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyState {
    Master,
    Backup,
    Fault,
    Stop,
}

impl NotifyState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyState::Master => "master",
            NotifyState::Backup => "backup",
            NotifyState::Fault => "fault",
            NotifyState::Stop => "stop",
        }
    }
}

/// What the driver must do, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bookkeeping and log line: a group changed state.
    Transition {
        group: GroupId,
        from: State,
        to: State,
        reason: Reason,
    },
    /// About to become MASTER: whatever must be in place before the addresses move (pending
    /// conntrack entries) is finished now. Queued before the first [`Action::AddAddresses`].
    BeforeMaster { target: NotifyTarget },
    /// Install the group's virtual addresses (idempotent).
    AddAddresses { group: GroupId },
    /// Remove the group's virtual addresses (idempotent).
    RemoveAddresses { group: GroupId },
    /// Send this advert on the group's interface (multicast or to its unicast peers).
    SendAdvert { group: GroupId, advert: Advert },
    /// Gratuitous ARP / unsolicited NA for every virtual address of the group.
    Announce { group: GroupId },
    /// Run hooks. Becoming MASTER notifies after addresses are in place; leaving MASTER
    /// notifies before they are removed (so a BGP prepend goes out first).
    Notify {
        target: NotifyTarget,
        state: NotifyState,
        reason: Reason,
    },
}

#[derive(Debug, Clone)]
pub struct SyncGroup {
    pub name: String,
    pub members: Vec<GroupId>,
}

/// A virtual router's parameters plus the sync group it belongs to.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub params: RouterParams,
    pub sync_group: Option<SyncGroupId>,
}

#[derive(Debug)]
pub struct Engine {
    routers: Vec<VirtualRouter>,
    sync_of: Vec<Option<SyncGroupId>>,
    sync_groups: Vec<SyncGroup>,
    actions: VecDeque<Action>,
    started: bool,
    /// Every router's next deadline, kept current by [`Engine::reschedule`] after each input.
    timers: TimerQueue,
    /// Scratch list of the routers due in [`Engine::handle_timeout`].
    due: Vec<GroupId>,
}

impl Engine {
    pub fn new(groups: Vec<GroupSpec>, sync_groups: Vec<SyncGroup>) -> Engine {
        let sync_of = groups.iter().map(|g| g.sync_group).collect();
        let count = groups.len();
        Engine {
            routers: groups
                .into_iter()
                .map(|g| VirtualRouter::new(g.params))
                .collect(),
            sync_of,
            sync_groups,
            actions: VecDeque::new(),
            started: false,
            timers: TimerQueue::new(count),
            due: Vec::new(),
        }
    }

    pub fn routers(&self) -> &[VirtualRouter] {
        &self.routers
    }
    pub fn router(&self, id: GroupId) -> &VirtualRouter {
        &self.routers[id]
    }
    pub fn sync_groups(&self) -> &[SyncGroup] {
        &self.sync_groups
    }
    pub fn sync_group_of(&self, id: GroupId) -> Option<SyncGroupId> {
        self.sync_of[id]
    }

    /// Next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// The timer queue agrees with the routers' own deadlines (for tests that drive the engine
    /// through long random runs).
    #[doc(hidden)]
    pub fn timers_consistent(&self) -> bool {
        let earliest = self.routers.iter().filter_map(|r| r.next_deadline()).min();
        self.timers.earliest() == earliest
    }

    /// Holds off (or allows again) preemption for every member of a sync group: while held, its
    /// backups follow a lower-priority master instead of taking over from it. Used until a
    /// recovering router's conntrack table is resynchronised, as CARP does with pfsync.
    pub fn set_preempt_hold(&mut self, sync_group: SyncGroupId, held: bool) {
        for k in 0..self.sync_groups[sync_group].members.len() {
            let m = self.sync_groups[sync_group].members[k];
            self.routers[m].set_preempt_held(held);
            self.reschedule(m);
        }
    }

    /// Records a packet the codec or the driver dropped, on the group it was meant for.
    pub fn count_invalid(&mut self, group: GroupId, reason: &'static str) {
        self.routers[group].stats_mut().count_invalid(reason);
    }

    /// The Startup event (RFC 5798 §6.4.1) for every group. Link state given before start
    /// through [`Engine::handle_link`] decides who starts in FAULT.
    pub fn start(&mut self, now: Instant) {
        self.started = true;
        for id in 0..self.routers.len() {
            if self.routers[id].state() != State::Init {
                continue; // moved already with its sync group
            }
            let want = if self.faulted(id) {
                Want {
                    to: State::Fault,
                    reason: Reason::LinkDown,
                }
            } else {
                self.routers[id].startup_want()
            };
            self.apply(now, id, want);
        }
        for id in 0..self.routers.len() {
            self.reschedule(id);
        }
    }

    /// An advert the codec accepted, delivered to the group of its interface, family and VRID.
    pub fn handle_advert(&mut self, now: Instant, group: GroupId, rx: &Received) {
        let (want, effects) = self.routers[group].handle_advert(now, rx);
        let reannounced = effects.iter().any(|e| matches!(e, Effect::Announce));
        self.push_effects(group, effects);
        if reannounced && let Some(s) = self.sync_of[group] {
            // A split brain healed on one member's link: the hosts on every member's link may
            // still send to the other router.
            for k in 0..self.sync_groups[s].members.len() {
                let m = self.sync_groups[s].members[k];
                if m != group {
                    let mut effects = Vec::new();
                    self.routers[m].reannounce(now, &mut effects);
                    self.push_effects(m, effects);
                }
            }
        }
        if let Some(want) = want {
            self.apply(now, group, want);
        }
        self.reschedule_with_siblings(group);
    }

    /// Fires every timer that is due, in group order.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(id) = self.timers.pop_due(now) {
            due.push(id);
        }
        due.sort_unstable();
        for &id in &due {
            // A sync-group sibling handled before it may have moved its timers.
            if self.routers[id].next_deadline().is_some_and(|t| t <= now) {
                let (want, effects) = self.routers[id].handle_timeout(now);
                self.push_effects(id, effects);
                if let Some(want) = want {
                    self.apply(now, id, want);
                }
            }
            self.reschedule_with_siblings(id);
        }
        due.clear();
        self.due = due;
    }

    /// The group's links (its own interface and every tracked one) are all up, or not.
    pub fn handle_link(&mut self, now: Instant, group: GroupId, all_up: bool) {
        if self.routers[group].link_ok() == all_up {
            return;
        }
        self.routers[group].set_link_ok(all_up);
        if self.started {
            self.apply_link(now, group, all_up);
            self.reschedule_with_siblings(group);
        }
    }

    /// The FAULT / leave-FAULT moves of a link change, after the engine has started.
    fn apply_link(&mut self, now: Instant, group: GroupId, all_up: bool) {
        if !all_up {
            self.apply(
                now,
                group,
                Want {
                    to: State::Fault,
                    reason: Reason::LinkDown,
                },
            );
        } else if !self.faulted(group) {
            // Every member is healthy again: leave FAULT through Initialize's Startup event.
            let members = self.members(group);
            for &m in &members {
                if self.routers[m].state() == State::Fault {
                    let mut effects = Vec::new();
                    self.routers[m].enter(now, State::Init, &mut effects);
                    self.push_effects(m, effects);
                }
            }
            let want = self.routers[group].startup_want();
            let want = Want {
                to: want.to,
                reason: Reason::LinkUp,
            };
            self.apply(now, group, want);
            // Members that did not move with it (no sync group, or a non-owner) start up too.
            for &m in &members {
                if self.routers[m].state() == State::Init {
                    let w = self.routers[m].startup_want();
                    self.apply(
                        now,
                        m,
                        Want {
                            to: w.to,
                            reason: Reason::LinkUp,
                        },
                    );
                }
            }
        }
    }

    /// Shutdown (RFC 5798 §6.4.2/§6.4.3): masters resign with priority 0 and remove their
    /// addresses; everything goes to Initialize. Hooks are told `stop` once per sync group.
    pub fn shutdown(&mut self, now: Instant) {
        let mut notified = Vec::new();
        for id in 0..self.routers.len() {
            let target = self.target(id);
            if !notified.contains(&target) {
                notified.push(target);
                self.actions.push_back(Action::Notify {
                    target,
                    state: NotifyState::Stop,
                    reason: Reason::Shutdown,
                });
            }
            self.enter(now, id, State::Init, Reason::Shutdown);
            self.reschedule(id);
        }
        self.started = false;
    }

    /// Brings router `id`'s entry in the timer queue up to date.
    fn reschedule(&mut self, id: GroupId) {
        self.timers.set(id, self.routers[id].next_deadline());
    }

    /// Reschedules the group and its sync-group siblings: every router an input can touch.
    fn reschedule_with_siblings(&mut self, id: GroupId) {
        match self.sync_of[id] {
            Some(s) => {
                for k in 0..self.sync_groups[s].members.len() {
                    self.reschedule(self.sync_groups[s].members[k]);
                }
            }
            None => self.reschedule(id),
        }
    }

    fn target(&self, id: GroupId) -> NotifyTarget {
        match self.sync_of[id] {
            Some(s) => NotifyTarget::SyncGroup(s),
            None => NotifyTarget::Group(id),
        }
    }

    /// The group and its sync-group siblings (just the group when it has none).
    fn members(&self, id: GroupId) -> Vec<GroupId> {
        match self.sync_of[id] {
            Some(s) => self.sync_groups[s].members.clone(),
            None => vec![id],
        }
    }

    /// Some member of the group's sync group (or the group itself) has a link down.
    fn faulted(&self, id: GroupId) -> bool {
        self.members(id).iter().any(|&m| !self.routers[m].link_ok())
    }

    /// Decides on a wanted transition with the sync-group rules and carries it out.
    fn apply(&mut self, now: Instant, id: GroupId, want: Want) {
        if want.to == State::Master && self.faulted(id) {
            // A sibling cannot serve: nobody in the sync group becomes MASTER.
            self.routers[id].rearm_master_down(now);
            return;
        }
        let members = self.members(id);
        let before = self.aggregate(&members);
        if want.to == State::Master && before != State::Master {
            self.actions.push_back(Action::BeforeMaster {
                target: self.target(id),
            });
        }
        // Leaving MASTER: hooks first (a BGP prepend must go out before the addresses go).
        let leaving_master = before == State::Master && want.to != State::Master;
        if leaving_master {
            self.notify(id, want.to, want.reason.clone());
        }
        let name = self.routers[id].params().name.clone();
        for &m in &members {
            let moves = match want.to {
                State::Master | State::Fault => true,
                // Masters step down together; a member starting up joins on its own.
                State::Backup => m == id || self.routers[m].state() == State::Master,
                State::Init => m == id,
            };
            if !moves {
                continue;
            }
            let reason = if m == id {
                want.reason.clone()
            } else {
                Reason::SyncGroup {
                    member: name.clone(),
                    cause: Box::new(want.reason.clone()),
                }
            };
            self.enter(now, m, want.to, reason);
        }
        let after = self.aggregate(&members);
        if !leaving_master && after != before {
            // Becoming MASTER: hooks after the addresses are in place.
            self.notify(id, after, want.reason);
        }
    }

    /// The state of a sync group as hooks see it.
    fn aggregate(&self, members: &[GroupId]) -> State {
        let states = || members.iter().map(|&m| self.routers[m].state());
        if states().any(|s| s == State::Fault) {
            State::Fault
        } else if states().any(|s| s == State::Master) {
            State::Master
        } else if states().all(|s| s == State::Backup) {
            State::Backup
        } else {
            State::Init
        }
    }

    fn notify(&mut self, id: GroupId, state: State, reason: Reason) {
        let state = match state {
            State::Master => NotifyState::Master,
            State::Backup => NotifyState::Backup,
            State::Fault => NotifyState::Fault,
            State::Init => return,
        };
        let target = self.target(id);
        self.actions.push_back(Action::Notify {
            target,
            state,
            reason,
        });
    }

    fn enter(&mut self, now: Instant, id: GroupId, to: State, reason: Reason) {
        let from = self.routers[id].state();
        let mut effects = Vec::new();
        if self.routers[id].enter(now, to, &mut effects) {
            self.actions.push_back(Action::Transition {
                group: id,
                from,
                to,
                reason,
            });
            self.push_effects(id, effects);
        }
    }

    fn push_effects(&mut self, group: GroupId, effects: Vec<Effect>) {
        for e in effects {
            self.actions.push_back(match e {
                Effect::AddAddresses => Action::AddAddresses { group },
                Effect::RemoveAddresses => Action::RemoveAddresses { group },
                Effect::SendAdvert(advert) => Action::SendAdvert { group, advert },
                Effect::Announce => Action::Announce { group },
            });
        }
    }
}
