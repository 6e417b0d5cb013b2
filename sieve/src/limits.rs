//! Bounds on what a script may cost, checked when it is parsed and when it runs.

/// Limits on a script's size and on what one run may do; the defaults suit a shared server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest script accepted, in bytes.
    pub max_script_size: usize,
    /// Deepest nesting: each block, test list and test inside another test counts one level.
    pub max_nesting: usize,
    /// Most commands and tests evaluated in one run.
    pub max_instructions: usize,
    /// Most `redirect` actions in one run.
    pub max_redirects: usize,
    /// Most actions in one run's outcome.
    pub max_actions: usize,
    /// Most distinct variables a run may set (RFC 5229 §7 asks for at least 128).
    pub max_variables: usize,
    /// Longest variable value in bytes; longer values are cut (RFC 5229 §7 asks for at least 4000).
    pub max_variable_size: usize,
    /// Most bytes of a message body that `body` tests look at, per test.
    pub max_body_scan: usize,
    /// Most steps of work one run may do: bytes of header and body read, characters compared
    /// and expanded (`:matches` is O(value × pattern) at worst).
    pub max_work_steps: u64,
    /// Most header values one test looks at.
    pub max_header_values: usize,
    /// Longest string after `${…}` expansion, in bytes; longer ones are cut.
    pub max_expanded_string: usize,
    /// Largest `:days` a vacation may ask for; smaller values are raised to 1.
    pub max_vacation_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_script_size: 64 * 1024,
            max_nesting: 15,
            max_instructions: 10_000,
            max_redirects: 4,
            max_actions: 32,
            max_variables: 128,
            max_variable_size: 4096,
            max_body_scan: 1024 * 1024,
            max_work_steps: 100_000_000,
            max_header_values: 1000,
            max_expanded_string: 64 * 1024,
            max_vacation_days: 90,
        }
    }
}
