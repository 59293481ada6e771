//! Interactive commands inside a task (`nomad alloc exec`): the mechanism
//! behind ExecTaskStreaming. The guest decides *what* runs (its
//! `exec-command`); this module runs it with pipes or a pseudo-terminal,
//! streams its output, feeds its input, and reports how it ended.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command as StdCommand, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::process::ProcExit;

/// Input from the client.
#[derive(Debug)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize { rows: u16, cols: u16 },
}

/// Output to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The stream has ended (sent once per stream).
    StdoutClosed,
    StderrClosed,
}

/// Runs `cmd` to completion, relaying input and output. With `tty`, the
/// command gets a new session whose controlling terminal is a fresh pty
/// (stdout and stderr are then one stream, sent as stdout). The command is
/// killed if the client goes away.
pub async fn run(
    mut cmd: StdCommand,
    tty: bool,
    initial_size: Option<(u16, u16)>,
    mut input: mpsc::Receiver<ExecInput>,
    output: mpsc::Sender<ExecOutput>,
) -> Result<ProcExit, String> {
    let mut master: Option<OwnedFd> = None;
    if tty {
        // The size is set before the command starts, so it never sees 0x0.
        let size = initial_size.map(|(rows, cols)| nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty =
            nix::pty::openpty(size.as_ref(), None).map_err(|e| format!("allocating a pty: {e}"))?;
        let slave = pty.slave;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("pty: {e}"));
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        make_session_leader_with_ctty(&mut cmd);
        master = Some(pty.master);
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
    }
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the command: {e}"))?;

    // Readers: one per output stream, each ending with its Closed marker.
    let mut readers = Vec::new();
    let mut stdin_sink: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = None;
    let mut resize_fd: Option<OwnedFd> = None;
    match master {
        Some(m) => {
            let for_resize = m.try_clone().map_err(|e| format!("pty: {e}"))?;
            let writer = m.try_clone().map_err(|e| format!("pty: {e}"))?;
            readers.push(tokio::spawn(relay(
                tokio::fs::File::from_std(std::fs::File::from(m)),
                output.clone(),
                ExecOutput::Stdout,
                ExecOutput::StdoutClosed,
            )));
            let _ = output.send(ExecOutput::StderrClosed).await;
            stdin_sink = Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(
                writer,
            ))));
            resize_fd = Some(for_resize);
        }
        None => {
            if let Some(out) = child.stdout.take() {
                readers.push(tokio::spawn(relay(
                    out,
                    output.clone(),
                    ExecOutput::Stdout,
                    ExecOutput::StdoutClosed,
                )));
            }
            if let Some(err) = child.stderr.take() {
                readers.push(tokio::spawn(relay(
                    err,
                    output.clone(),
                    ExecOutput::Stderr,
                    ExecOutput::StderrClosed,
                )));
            }
            if let Some(stdin) = child.stdin.take() {
                stdin_sink = Some(Box::new(stdin));
            }
        }
    }

    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| format!("waiting for the command: {e}"))?,
            msg = input.recv() => match msg {
                Some(ExecInput::Stdin(data)) => {
                    if let Some(w) = stdin_sink.as_mut() && w.write_all(&data).await.is_err() {
                        stdin_sink = None;
                    }
                }
                Some(ExecInput::CloseStdin) => {
                    if tty {
                        // A terminal has no half-close: send end-of-file (^D).
                        if let Some(w) = stdin_sink.as_mut() {
                            let _ = w.write_all(&[4]).await;
                        }
                    } else {
                        stdin_sink = None;
                    }
                }
                Some(ExecInput::Resize { rows, cols }) => {
                    if let Some(fd) = &resize_fd {
                        let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                        let _ = rustix::termios::tcsetwinsize(fd, size);
                    }
                }
                // The client is gone: stop the command.
                None => {
                    let _ = child.start_kill();
                    let status = child.wait().await.map_err(|e| format!("waiting for the command: {e}"))?;
                    break status;
                }
            },
        }
    };
    drop(stdin_sink);
    drop(resize_fd);
    for r in readers {
        let _ = r.await;
    }
    Ok(ProcExit::from(status))
}

async fn relay(
    mut from: impl AsyncRead + Unpin,
    to: mpsc::Sender<ExecOutput>,
    wrap: fn(Vec<u8>) -> ExecOutput,
    closed: ExecOutput,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            // EIO on a pty master means the terminal's last user is gone.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.send(wrap(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.send(closed).await;
}

/// In the child, before exec: a new session with the pty (already on
/// stdin) as its controlling terminal, so job control and ^C work.
#[allow(unsafe_code)]
fn make_session_leader_with_ctty(cmd: &mut StdCommand) {
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe setsid and ioctl(TIOCSCTTY) system calls; it does not
    // allocate or take locks.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn collect(mut rx: mpsc::Receiver<ExecOutput>) -> (Vec<u8>, Vec<u8>, usize) {
        let (mut out, mut err, mut closed) = (Vec::new(), Vec::new(), 0);
        while let Some(m) = rx.recv().await {
            match m {
                ExecOutput::Stdout(d) => out.extend(d),
                ExecOutput::Stderr(d) => err.extend(d),
                ExecOutput::StdoutClosed | ExecOutput::StderrClosed => closed += 1,
            }
        }
        (out, err, closed)
    }

    #[tokio::test]
    async fn pipes_carry_stdin_stdout_stderr_and_the_exit_code() {
        let mut cmd = StdCommand::new("/bin/sh");
        cmd.args(["-c", "read x; echo out:$x; echo err >&2; exit 7"]);
        let (in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, out_rx) = mpsc::channel(16);
        in_tx
            .send(ExecInput::Stdin(b"hi\n".to_vec()))
            .await
            .unwrap();
        in_tx.send(ExecInput::CloseStdin).await.unwrap();
        let collector = tokio::spawn(collect(out_rx));
        let exit = run(cmd, false, None, in_rx, out_tx).await.unwrap();
        let (out, err, closed) = collector.await.unwrap();
        assert_eq!(exit.code, 7);
        assert_eq!(out, b"out:hi\n");
        assert_eq!(err, b"err\n");
        assert_eq!(closed, 2);
        drop(in_tx);
    }

    #[tokio::test]
    async fn a_tty_is_a_terminal_with_the_requested_size() {
        let mut cmd = StdCommand::new("/bin/sh");
        cmd.args(["-c", "sleep 0.2; test -t 0 && echo tty; stty size"]);
        let (in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, out_rx) = mpsc::channel(16);
        in_tx
            .send(ExecInput::Resize {
                rows: 33,
                cols: 101,
            })
            .await
            .unwrap();
        let collector = tokio::spawn(collect(out_rx));
        let exit = run(cmd, true, None, in_rx, out_tx).await.unwrap();
        let (out, _, _) = collector.await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(exit.code, 0, "{text}");
        assert!(text.contains("tty"), "{text}");
        assert!(text.contains("33 101"), "{text}");
        drop(in_tx);
    }

    #[tokio::test]
    async fn the_initial_size_is_set_before_the_command_starts() {
        let mut cmd = StdCommand::new("/bin/sh");
        cmd.args(["-c", "stty size"]);
        let (_in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, out_rx) = mpsc::channel(16);
        let collector = tokio::spawn(collect(out_rx));
        run(cmd, true, Some((24, 80)), in_rx, out_tx).await.unwrap();
        let (out, _, _) = collector.await.unwrap();
        assert!(String::from_utf8_lossy(&out).contains("24 80"), "{out:?}");
    }
}
