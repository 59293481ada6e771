//! Finding task configs in what a user hands the local commands: a Nomad
//! job file (every task whose `driver` is this guest's driver), a single
//! `config { }` block, or the bare body of one.
//!
//! The config's HCL text is cut out of the file as written, with the line
//! it starts on, so errors found when decoding it point into the user's
//! file. Parsing uses hcl-rs's `hcl-edit`, which keeps source spans.

use std::ops::Range;
use std::time::Duration;

use hcl::edit::Span;
use hcl::edit::expr::Expression;
use hcl::edit::structure::{Block, Body};

/// One config body found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundConfig {
    /// `job "x" > group "y" > task "z"` for a job file; None for a bare body.
    pub task: Option<TaskPath>,
    /// The HCL text of the body (without the braces).
    pub body: String,
    /// The 1-based line of the file where `body`'s first line is.
    pub first_line: usize,
    /// The task's `env { }` entries whose values are plain strings.
    pub env: Vec<(String, String)>,
    /// What else of the task the driver calls carry.
    pub settings: TaskSettings,
}

/// The task's settings besides `config` that Nomad passes to the driver
/// (in StartTask and StopTask), where the job file gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSettings {
    pub user: Option<String>,
    pub kill_signal: Option<String>,
    pub kill_timeout: Option<Duration>,
    /// `resources { cpu, memory, memory_max }`.
    pub cpu: Option<i64>,
    pub memory_mb: Option<i64>,
    pub memory_max_mb: Option<i64>,
}

/// Where a task sits in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPath {
    pub job: String,
    pub group: String,
    pub task: String,
}

impl std::fmt::Display for TaskPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {:?}, group {:?}, task {:?}",
            self.job, self.group, self.task
        )
    }
}

impl FoundConfig {
    /// The file line of a 1-based line of [`FoundConfig::body`].
    pub fn file_line(&self, body_line: usize) -> usize {
        self.first_line + body_line.saturating_sub(1)
    }
}

/// A file that is not usable HCL, or holds no config for the driver.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    NoTask(String),
}

/// Finds the config bodies for `driver` in `text`.
///
/// - A file with a top-level `job` block is a job file: each task (in a
///   group, or directly in the job as HCL1 jobs allowed) whose `driver` is
///   `driver` gives its `config` block (an empty body if it has none).
///   None matching is an error listing the tasks that are there.
/// - A file that is exactly one unlabelled `config { }` block gives its body.
/// - Anything else is taken as a bare config body.
pub fn find_configs(text: &str, driver: &str) -> Result<Vec<FoundConfig>, FileError> {
    let body = hcl::edit::parser::parse_body(text).map_err(|e| FileError::Syntax {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_owned(),
    })?;
    let jobs: Vec<&Block> = body.get_blocks("job").collect();
    if !jobs.is_empty() {
        return job_configs(text, &jobs, driver);
    }
    let mut items = body.iter();
    if let (Some(only), None) = (items.next(), items.next())
        && let Some(block) = only.as_block()
        && block.has_ident("config")
        && block.labels.is_empty()
    {
        return Ok(vec![block_body(text, block, None, Vec::new())]);
    }
    Ok(vec![FoundConfig {
        task: None,
        body: text.to_owned(),
        first_line: 1,
        env: Vec::new(),
        settings: TaskSettings::default(),
    }])
}

/// Finds the agent plugin config body in `text`: the `config` block of the
/// file's one `plugin "..." { }` block, a lone `config { }` block, or a bare
/// body.
pub fn find_plugin_config(text: &str) -> Result<FoundConfig, FileError> {
    let body = hcl::edit::parser::parse_body(text).map_err(|e| FileError::Syntax {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_owned(),
    })?;
    let plugins: Vec<&Block> = body.get_blocks("plugin").collect();
    match plugins.as_slice() {
        [] => {}
        [plugin] => {
            let configs: Vec<&Block> = plugin.body.get_blocks("config").collect();
            return match configs.as_slice() {
                [] => Ok(FoundConfig {
                    task: None,
                    body: String::new(),
                    first_line: line_of(text, plugin.span().map_or(0, |s| s.start)),
                    env: Vec::new(),
                    settings: TaskSettings::default(),
                }),
                [one] => Ok(block_body(text, one, None, Vec::new())),
                [_, second, ..] => Err(FileError::Syntax {
                    line: line_of(text, second.span().map_or(0, |s| s.start)),
                    column: 1,
                    message: "the plugin block has more than one config block".into(),
                }),
            };
        }
        [_, second, ..] => {
            return Err(FileError::Syntax {
                line: line_of(text, second.span().map_or(0, |s| s.start)),
                column: 1,
                message: "more than one plugin block: keep only this driver's".into(),
            });
        }
    }
    let found = find_configs(text, "")?;
    Ok(found.into_iter().next().unwrap_or(FoundConfig {
        task: None,
        body: String::new(),
        first_line: 1,
        env: Vec::new(),
        settings: TaskSettings::default(),
    }))
}

/// The 1-based line in `body` (a config body's text) of the field a
/// decoding error names, e.g. `config.port["http"].to` or
/// `config.mount[1].source`; if the field itself is not written (a missing
/// attribute), the line of the innermost enclosing block that is.
pub fn line_of_field(body: &str, path: &str) -> Option<usize> {
    let parsed = hcl::edit::parser::parse_body(body).ok()?;
    let mut cur: &Body = &parsed;
    let mut best = None;
    let segments = path_segments(path.strip_prefix("config").unwrap_or(path));
    for (name, index) in &segments {
        if let Some(attr) = cur.get_attribute(name) {
            return attr.span().map(|s| line_of(body, s.start)).or(best);
        }
        let mut blocks = cur.get_blocks(name);
        let block = match index.as_deref() {
            None => blocks.next(),
            Some(i) => match (
                i.parse::<usize>(),
                i.strip_prefix('"').and_then(|l| l.strip_suffix('"')),
            ) {
                (Ok(n), _) => blocks.nth(n),
                (_, Some(label)) => blocks.find(|b| b.labels.iter().any(|l| l.as_str() == label)),
                _ => None,
            },
        };
        let Some(block) = block else { break };
        best = block.span().map(|s| line_of(body, s.start)).or(best);
        cur = &block.body;
    }
    best
}

/// `.a["x"].b[2]` -> [("a", Some("\"x\"")), ("b", Some("2"))].
fn path_segments(path: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            out.push((r[..end].to_owned(), None));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            if let Some(last) = out.last_mut() {
                last.1 = Some(r[..end].to_owned());
            }
            rest = &r[end + 1..];
        } else {
            break;
        }
    }
    out
}

fn label(b: &Block) -> String {
    b.labels
        .first()
        .map(|l| l.as_str().to_owned())
        .unwrap_or_default()
}

fn job_configs(text: &str, jobs: &[&Block], driver: &str) -> Result<Vec<FoundConfig>, FileError> {
    let mut found = Vec::new();
    let mut others = Vec::new();
    for job in jobs {
        let mut tasks: Vec<(String, &Block)> = Vec::new();
        for group in job.body.get_blocks("group") {
            tasks.extend(group.body.get_blocks("task").map(|t| (label(group), t)));
        }
        // HCL1 jobs could put a task directly in the job: its group is the task.
        tasks.extend(job.body.get_blocks("task").map(|t| (label(t), t)));
        for (group, task) in tasks {
            let path = TaskPath {
                job: label(job),
                group,
                task: label(task),
            };
            let uses = task.body.get_attribute("driver").map(|a| &a.value);
            match uses.and_then(Expression::as_str) {
                Some(d) if d == driver => {}
                Some(d) => {
                    others.push(format!("{:?} (driver {d:?})", path.task));
                    continue;
                }
                None => {
                    others.push(format!("{:?} (no literal driver)", path.task));
                    continue;
                }
            }
            let env = task_env(&task.body);
            let settings = task_settings(text, task)?;
            let configs: Vec<&Block> = task.body.get_blocks("config").collect();
            match configs.as_slice() {
                [] => found.push(FoundConfig {
                    task: Some(path),
                    body: String::new(),
                    first_line: line_of(text, task.span().map_or(0, |s| s.start)),
                    env,
                    settings,
                }),
                [one] => {
                    let mut config = block_body(text, one, Some(path), env);
                    config.settings = settings;
                    found.push(config);
                }
                [_, second, ..] => {
                    let at = line_of(text, second.span().map_or(0, |s| s.start));
                    return Err(FileError::Syntax {
                        line: at,
                        column: 1,
                        message: format!("{path}: more than one config block"),
                    });
                }
            }
        }
    }
    if found.is_empty() {
        let there = if others.is_empty() {
            "it has no tasks".to_owned()
        } else {
            format!("its tasks are {}", others.join(", "))
        };
        return Err(FileError::NoTask(format!(
            "no task uses driver {driver:?}: {there}"
        )));
    }
    Ok(found)
}

/// `env { K = "v" }` entries with plain string values (others need Nomad's
/// interpolation and are left out).
fn task_env(task: &Body) -> Vec<(String, String)> {
    task.get_blocks("env")
        .flat_map(|b| b.body.attributes())
        .filter_map(|a| {
            a.value
                .as_str()
                .map(|v| (a.key.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

/// `user`, `kill_signal`, `kill_timeout` and `resources` of a task block,
/// where they are literals.
fn task_settings(text: &str, task: &Block) -> Result<TaskSettings, FileError> {
    let string = |body: &Body, key: &str| {
        body.get_attribute(key)
            .and_then(|a| a.value.as_str())
            .map(str::to_owned)
    };
    let mut s = TaskSettings {
        user: string(&task.body, "user"),
        kill_signal: string(&task.body, "kill_signal"),
        ..TaskSettings::default()
    };
    if let Some(attr) = task.body.get_attribute("kill_timeout") {
        let parsed = attr.value.as_str().and_then(go_duration);
        s.kill_timeout = Some(parsed.ok_or_else(|| FileError::Syntax {
            line: line_of(text, attr.span().map_or(0, |s| s.start)),
            column: 1,
            message: "kill_timeout: expected a duration such as \"10s\" or \"1m30s\"".into(),
        })?);
    }
    let number = |body: &Body, key: &str| {
        body.get_attribute(key)
            .and_then(|a| a.value.as_number())
            .and_then(|n| n.as_i64())
    };
    if let Some(res) = task.body.get_blocks("resources").next() {
        s.cpu = number(&res.body, "cpu");
        s.memory_mb = number(&res.body, "memory");
        s.memory_max_mb = number(&res.body, "memory_max");
    }
    Ok(s)
}

/// A Go duration (`300ms`, `10s`, `1m30s`, `2h`), as jobs write them.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(value * seconds).ok()?;
        rest = &rest[unit..];
    }
    Some(total)
}

/// The text between a block's braces, and the line it starts on.
fn block_body(
    text: &str,
    block: &Block,
    task: Option<TaskPath>,
    env: Vec<(String, String)>,
) -> FoundConfig {
    let span: Range<usize> = block.span().unwrap_or(0..text.len());
    let whole = text.get(span.clone()).unwrap_or("");
    // A config block has no labels, so its first `{` opens the body.
    let (start, end) = match (whole.find('{'), whole.rfind('}')) {
        (Some(open), Some(close)) if close > open => (span.start + open + 1, span.start + close),
        _ => (span.start, span.start),
    };
    FoundConfig {
        task,
        body: text.get(start..end).unwrap_or("").to_owned(),
        first_line: line_of(text, start),
        env,
        settings: TaskSettings::default(),
    }
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text
        .as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const JOB: &str = r#"job "example" {
  group "web" {
    task "greet" {
      driver = "hello-world-example"
      user = "nobody"
      kill_timeout = "1m30s"
      kill_signal = "SIGTERM"

      resources {
        cpu    = 500
        memory = 256
      }

      env {
        WHO = "world"
        HOST = "${attr.unique.hostname}"
      }

      config {
        greeting = "hi"
        exit_code = 3
      }
    }

    task "db" {
      driver = "docker"
      config {
        image = "postgres"
      }
    }

    task "bare" {
      driver = "hello-world-example"
    }
  }
}
"#;

    #[test]
    fn job_files_give_each_task_of_the_driver() {
        let found = find_configs(JOB, "hello-world-example").unwrap();
        assert_eq!(found.len(), 2);
        let greet = &found[0];
        assert_eq!(
            greet.task.as_ref().unwrap().to_string(),
            "job \"example\", group \"web\", task \"greet\""
        );
        assert_eq!(
            greet.body,
            "\n        greeting = \"hi\"\n        exit_code = 3\n      "
        );
        // The body's line 3 (`exit_code = 3`) is line 21 of the file.
        assert_eq!(greet.file_line(3), 21);
        assert_eq!(greet.env, vec![("WHO".into(), "world".into())]);
        assert_eq!(
            greet.settings,
            TaskSettings {
                user: Some("nobody".into()),
                kill_signal: Some("SIGTERM".into()),
                kill_timeout: Some(Duration::from_secs(90)),
                cpu: Some(500),
                memory_mb: Some(256),
                memory_max_mb: None,
            }
        );
        let bare = &found[1];
        assert_eq!(bare.task.as_ref().unwrap().task, "bare");
        assert_eq!(bare.body, "");
    }

    #[test]
    fn a_job_without_the_driver_lists_its_tasks() {
        let e = find_configs(JOB, "raw_exec").unwrap_err().to_string();
        assert_eq!(
            e,
            "no task uses driver \"raw_exec\": its tasks are \"greet\" (driver \
             \"hello-world-example\"), \"db\" (driver \"docker\"), \"bare\" (driver \
             \"hello-world-example\")"
        );
    }

    #[test]
    fn bare_bodies_and_single_config_blocks() {
        let bare = find_configs("greeting = \"hi\"\n", "x").unwrap();
        assert_eq!(bare[0].body, "greeting = \"hi\"\n");
        assert_eq!(bare[0].first_line, 1);
        let block = find_configs("# mine\nconfig {\n  greeting = \"hi\"\n}\n", "x").unwrap();
        assert_eq!(block[0].body, "\n  greeting = \"hi\"\n");
        assert_eq!(block[0].file_line(2), 3);
    }

    #[test]
    fn plugin_config_from_an_agent_file_a_block_or_a_body() {
        let agent = "plugin_dir = \"/opt/p\"\nplugin \"nomad-driver-wasm\" {\n  args = []\n  \
                     config {\n    shell = \"fish\"\n  }\n}\n";
        let found = find_plugin_config(agent).unwrap();
        assert_eq!(found.body, "\n    shell = \"fish\"\n  ");
        assert_eq!(found.file_line(2), 5);
        assert_eq!(
            find_plugin_config("shell = \"fish\"").unwrap().body,
            "shell = \"fish\""
        );
        assert_eq!(find_plugin_config("plugin \"x\" {\n}\n").unwrap().body, "");
        assert!(find_plugin_config("plugin \"a\" {}\nplugin \"b\" {}\n").is_err());
    }

    #[test]
    fn decode_paths_point_at_lines() {
        let body = "\n  greeting = 5\n  port \"http\" {\n    to = \"x\"\n  }\n  mount {\n  }\n  mount {\n    source = 1\n  }\n";
        assert_eq!(line_of_field(body, "config.greeting"), Some(2));
        assert_eq!(line_of_field(body, "config.port[\"http\"].to"), Some(4));
        assert_eq!(line_of_field(body, "config.mount[1].source"), Some(9));
        // Missing attribute: the enclosing block.
        assert_eq!(line_of_field(body, "config.mount[0].target"), Some(6));
        assert_eq!(line_of_field(body, "config.nothing"), None);
        assert_eq!(line_of_field(body, "config"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "s", "10 s", "ten s", "5d"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
        let job = "job \"j\" {\n  group \"g\" {\n    task \"t\" {\n      driver = \"d\"\n      \
                   kill_timeout = \"soon\"\n    }\n  }\n}\n";
        let e = find_configs(job, "d").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 5, column 1: kill_timeout: expected a duration such as \"10s\" or \"1m30s\""
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = find_configs("a = 1\nb = = 2\n", "x").unwrap_err();
        let FileError::Syntax { line, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(line, 2);
    }
}
