//! One actor timer for the earliest of a set of due times. The retry line,
//! the scheduled tasks, the provider windows and the periodic tasks each
//! keep one: it is set for the earliest due time, and an entry removed
//! meanwhile leaves it to fire on nothing.

use actix::prelude::*;
use tokio::time::Instant;

use super::Manager;

/// See the module docs.
#[derive(Default)]
pub(super) struct DueTimer {
    /// When it fires, if it is set.
    set: Option<(Instant, SpawnHandle)>,
}

impl DueTimer {
    /// Sets the timer to run `fired` at `due`, unless it is set for `due`
    /// or earlier already (that one fires first, and its `fired` sets it
    /// again). `slot` finds this timer in the manager, to clear it when it
    /// fires.
    pub(super) fn arm(
        &mut self,
        due: Instant,
        ctx: &mut Context<Manager>,
        slot: fn(&mut Manager) -> &mut DueTimer,
        fired: fn(&mut Manager, &mut Context<Manager>),
    ) {
        if let Some((at, handle)) = self.set {
            if at <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = due.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, move |act, ctx| {
            slot(act).set = None;
            fired(act, ctx);
        });
        self.set = Some((due, handle));
    }
}
