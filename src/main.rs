//! The `mizan-render` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "mizan-render", version, about = "Self-hosted Mizan render node")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "MIZAN_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render one page to stdout, from captured origin answers (for SSR parity tests).
    Render {
        /// The edge manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The request path and query, e.g. /products/42.
        #[arg(long)]
        url: String,
        /// JSON file of origin answers by context: {"ctx": {"data": ...} | {"error": {...}}}.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print {status, headers, html} as JSON instead of the HTML alone.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("MIZAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Render { manifest, url, data, json } => {
            let rendered = mizan_render::oneshot::render(&manifest, &url, data.as_deref())
                .await
                .with_context(|| format!("rendering {url}"))?;
            let mut out = std::io::stdout().lock();
            if json {
                let value = serde_json::json!({
                    "status": rendered.status,
                    "headers": rendered.headers,
                    "html": rendered.html,
                });
                writeln!(out, "{value}")?;
            } else {
                out.write_all(rendered.html.as_bytes())?;
            }
            Ok(())
        }
    }
}
