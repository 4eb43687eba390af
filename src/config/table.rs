//! The settings table: one entry per setting, the only place a setting's facts are written.

/// Settings the user set that have no effect yet.
pub fn ineffective_set(settings: &super::Settings) -> Vec<&'static str> {
    let _ = settings;
    Vec::new()
}
