//! postbus integration test harness
