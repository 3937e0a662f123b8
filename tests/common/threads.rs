//! A process's threads as Linux shows them in `/proc`, for the tests and the benchmark.

/// Each thread of `pid` by name, with its nice value (Linux keeps one per thread). A thread
/// that ends while it is being read is left out.
pub fn thread_nice(pid: u32) -> Vec<(String, i32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // After the command name in parentheses: state is field 3, nice field 19.
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            Some((comm.trim().to_owned(), nice))
        })
        .collect()
}
