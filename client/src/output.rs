//! Where the REPL's lines go: straight to stdout/stderr, or, while rustyline owns the terminal,
//! through its external printer so that a push arriving mid-prompt does not garble the line.

use std::io::Write;
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use rustyline::ExternalPrinter;

/// The one sink for everything the client prints, shared by the REPL loop and the connection task.
pub struct Output {
    printer: Mutex<Option<PrinterThread>>,
}

struct PrinterThread {
    tx: Sender<String>,
    thread: JoinHandle<()>,
}

impl Output {
    /// Prints with plain writes (scripted mode, or a terminal rustyline cannot drive).
    pub fn direct() -> Self {
        Self {
            printer: Mutex::new(None),
        }
    }

    /// Prints through rustyline's external printer, from a thread of its own: the printer may
    /// block until the prompt takes the line, which must never stall the async runtime.
    pub fn with_printer<P: ExternalPrinter + Send + 'static>(mut printer: P) -> Self {
        let (tx, rx) = channel::<String>();
        let thread = std::thread::spawn(move || {
            while let Ok(text) = rx.recv() {
                if printer.print(text.clone()).is_err() {
                    write_stdout(&text);
                }
            }
        });
        Self {
            printer: Mutex::new(Some(PrinterThread { tx, thread })),
        }
    }

    /// Prints `text` (one or more lines, no trailing newline needed) to stdout.
    pub fn line(&self, text: impl Into<String>) {
        let mut text = text.into();
        text.push('\n');
        let guard = self.printer.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(printer) => {
                if let Err(unsent) = printer.tx.send(text) {
                    write_stdout(&unsent.0);
                }
            }
            None => write_stdout(&text),
        }
    }

    /// Prints `error: text` to stderr (or through the printer in interactive mode).
    pub fn error(&self, text: impl std::fmt::Display) {
        let text = format!("error: {text}\n");
        let guard = self.printer.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(printer) => {
                if let Err(unsent) = printer.tx.send(text) {
                    write_stderr(&unsent.0);
                }
            }
            None => write_stderr(&text),
        }
    }

    /// Prints whatever is still queued for the printer, then switches to plain writes.
    pub fn shutdown(&self) {
        let printer = self
            .printer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(PrinterThread { tx, thread }) = printer {
            drop(tx);
            let _ = thread.join();
        }
    }
}

fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn write_stderr(text: &str) {
    let mut out = std::io::stderr().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
