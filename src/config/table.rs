//! The settings table: one entry per setting, the only place a setting's facts are written.
