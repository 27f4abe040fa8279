//! `forkgraph clean`: removes the declared outputs of the selected tasks (and any temporaries
//! and markers of unfinished ones).

use std::path::PathBuf;

use crate::command;
use crate::plan::Plan;

/// Removes outputs; returns those that existed.
pub fn clean(plan: &Plan, mask: &[bool]) -> Vec<PathBuf> {
    command::remove_all_stale_temps(
        plan.tasks
            .iter()
            .enumerate()
            .filter(|(i, _)| mask[*i])
            .flat_map(|(_, t)| t.outputs.iter()),
    );
    let mut removed = Vec::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        if !mask[i] {
            continue;
        }
        for o in &t.outputs {
            let _ = std::fs::remove_file(command::partial_marker(o));
            if std::fs::symlink_metadata(o).is_ok() {
                command::remove_any(o);
                removed.push(o.clone());
            }
        }
    }
    removed
}
