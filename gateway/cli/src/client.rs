//! The client subcommands: `participants` and `report`, against a running
//! gateway, in plaintext or over (mutual) TLS.

use crate::error::Described;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hurtigspor_gateway::{auth::BearerToken, domain::hurtigspor};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CreateParticipantRequest, GetHurtigsporReportRequest, GetParticipantRequest, HurtigsporStatus,
        ListHurtigsporParticipantsRequest, ListParticipantsRequest, LookupParticipantRequest, Participant, Programme,
        participant_service_client::ParticipantServiceClient, reporting_service_client::ReportingServiceClient,
    },
};
use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// TLS to a gateway with `[tls]`: the server's CA, and the client's
/// certificate when the gateway asks for one (mutual TLS).
#[derive(Args, Debug, Default)]
pub struct ClientTls {
    /// CA certificate (PEM) that signed the gateway's certificate; implies
    /// TLS (use an https:// --server).
    #[arg(long, global = true, value_name = "FILE", env = "HURTIGSPOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), for a gateway that requires one.
    #[arg(long, global = true, value_name = "FILE", env = "HURTIGSPOR_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, value_name = "FILE", env = "HURTIGSPOR_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// A channel to `server`, over TLS when a CA file is given.
    pub async fn connect(&self, server: &str) -> anyhow::Result<tonic::transport::Channel> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(server.to_owned())
            .with_context(|| format!("--server {server} is not a URL, e.g. https://gateway.example:50051"))?;
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
        };
        match &self.ca_file {
            Some(_) if !server.starts_with("https://") => {
                bail!("--ca-file means TLS: give the server as https://{}", server.trim_start_matches("http://"))
            }
            Some(ca) => {
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(read("--ca-file", ca)?));
                if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                    tls =
                        tls.identity(tonic::transport::Identity::from_pem(read("--cert", cert)?, read("--key", key)?));
                }
                endpoint = endpoint.tls_config(tls).context("--ca-file, --cert or --key is not usable PEM")?;
            }
            None if server.starts_with("https://") => {
                bail!("an https:// server needs --ca-file: the CA certificate that signed the gateway's certificate")
            }
            None if self.cert.is_some() => bail!("--cert needs TLS: give --ca-file and an https:// --server"),
            None => {}
        }
        endpoint.connect().await.with_context(|| {
            format!("cannot reach a gateway at {server}; start one with `cargo run -- dev` or pass --server (and --ca-file, --cert, --key for TLS)")
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum ParticipantsCommand {
    /// Register a participant.
    Create {
        /// Fodselsnummer or D-nummer; `-` reads it from stdin, which keeps it
        /// out of shell history.
        #[arg(long)]
        national_id: String,
        #[arg(long)]
        given_name: String,
        #[arg(long)]
        family_name: String,
        /// Four-digit kommunenummer, e.g. 0301.
        #[arg(long)]
        kommune: String,
        /// Programme start, YYYY-MM-DD.
        #[arg(long)]
        start_date: String,
        /// Planned programme end, YYYY-MM-DD.
        #[arg(long)]
        planned_end_date: Option<String>,
        /// NAV office number (enhetsnummer).
        #[arg(long)]
        nav_office: Option<String>,
        /// Client request id, for safe retries.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one participant.
    Get {
        /// participants/{id}
        name: String,
    },
    /// Find a participant by national id, read from stdin.
    Lookup,
    /// List participants.
    List {
        #[arg(long)]
        kommune: Option<String>,
        /// Hurtigspor status, e.g. candidate or HURTIGSPOR_STATUS_CANDIDATE.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Follow next_page_token to the end.
        #[arg(long)]
        all: bool,
    },
}

/// The token given, or else the `admin` token of a dev gateway in the
/// default data directory.
pub(crate) fn token_or_dev(token: Option<String>) -> anyhow::Result<String> {
    match token {
        Some(t) => Ok(t),
        None => hurtigspor_gateway::auth::dev::dev_token(Path::new(".hurtigspor-dev"), "admin"),
    }
}

fn parse_date(s: &str, flag: &str) -> anyhow::Result<Date> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| format!("{flag} must be YYYY-MM-DD"))?;
    Ok(hurtigspor_gateway::domain::dates::to_proto(d))
}

fn parse_status(s: &str) -> anyhow::Result<HurtigsporStatus> {
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("HURTIGSPOR_STATUS_") { upper } else { format!("HURTIGSPOR_STATUS_{upper}") };
    HurtigsporStatus::from_str_name(&full).with_context(|| {
        format!(
            "unknown status {s:?}; one of {}",
            hurtigspor::ALL.map(hurtigspor::short_name).join(", ").to_lowercase()
        )
    })
}

fn read_stdin_line() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
    Ok(s.trim().to_owned())
}

fn date_text(d: Option<&Date>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

fn print_participant(p: &Participant) {
    let status = p.hurtigspor.as_ref().map_or(0, |h| h.status);
    let status = HurtigsporStatus::try_from(status).unwrap_or_default();
    let programme = p.programme.clone().unwrap_or_default();
    println!("{}", p.name);
    println!("  name:        {} {}", p.given_name, p.family_name);
    println!("  national id: {} (masked)", "*".repeat(p.national_id.len()));
    println!("  kommune:     {}", p.kommunenummer);
    println!(
        "  programme:   {} to {}",
        date_text(programme.start_date.as_ref()),
        date_text(programme.planned_end_date.as_ref())
    );
    println!("  hurtigspor:  {}", hurtigspor::short_name(status));
    println!("  etag:        {}", p.etag);
    for w in &p.warnings {
        println!("  warning:     {} ({}): {}", w.code, w.field, w.message);
    }
}

/// A channel whose every call carries the bearer token (and purpose).
pub(crate) type Authed = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>;

/// What `report` asks for, and how it is printed.
pub(crate) struct Asked {
    pub kommunenummer: String,
    pub year: i32,
    pub csv: bool,
    /// The dates per participant instead of the figures.
    pub participants: bool,
}

pub(crate) async fn report(
    server: &str,
    tls: ClientTls,
    token: &str,
    purpose: Option<&str>,
    asked: Asked,
) -> anyhow::Result<()> {
    let Some(purpose) = purpose else {
        bail!(
            "a report is read for a reason written to the audit log: pass --purpose <code>, e.g. --purpose statistics"
        );
    };
    let channel = tls.connect(server).await?;
    let interceptor = BearerToken::new(token)?.with_purpose(purpose)?;
    let mut client = ReportingServiceClient::with_interceptor(channel, interceptor);
    let Asked { kommunenummer, year, csv, participants } = asked;
    if participants {
        return report_participants(&mut client, kommunenummer, year, csv).await;
    }
    let report = client
        .get_hurtigspor_report(GetHurtigsporReportRequest { kommunenummer, year })
        .await
        .described()?
        .into_inner();
    if csv {
        print!("{}", hurtigspor_gateway::report::csv(&report));
    } else {
        print!("{}", hurtigspor_gateway::report::table(&report));
    }
    Ok(())
}

/// Every page of the per-participant dates, printed as it arrives (CSV, or
/// aligned columns), with the running count on stderr.
async fn report_participants(
    client: &mut ReportingServiceClient<Authed>,
    kommunenummer: String,
    year: i32,
    csv: bool,
) -> anyhow::Result<()> {
    use hurtigspor_gateway::report::{PARTICIPANT_COLUMNS, participant_row};
    // Ids are 32 characters, kommunenummer 4, dates 10.
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        if csv {
            cells.collect::<Vec<_>>().join(",")
        } else {
            let widths = std::iter::once(32).chain(std::iter::once(13)).chain(std::iter::repeat(10));
            cells
                .zip(widths.zip(PARTICIPANT_COLUMNS))
                .map(|(c, (w, h))| format!("{c:<width$}", width = w.max(h.len())))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        }
    };
    println!("{}", line(&mut PARTICIPANT_COLUMNS.into_iter()));
    let (mut token, mut listed) = (String::new(), 0usize);
    loop {
        let page = client
            .list_hurtigspor_participants(ListHurtigsporParticipantsRequest {
                kommunenummer: kommunenummer.clone(),
                year,
                page_size: 500,
                page_token: token,
            })
            .await
            .described()?
            .into_inner();
        for p in &page.participants {
            println!("{}", line(&mut participant_row(p).split(',')));
        }
        listed += page.participants.len();
        eprintln!("{listed} participants so far");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    eprintln!("{listed} participants in all");
    Ok(())
}

pub(crate) async fn participants(
    server: &str,
    tls: ClientTls,
    token: &str,
    purpose: Option<&str>,
    command: ParticipantsCommand,
) -> anyhow::Result<()> {
    if purpose.is_none() {
        bail!(
            "reading or changing a person needs a purpose for the audit log: pass --purpose <code>, e.g. --purpose case-processing"
        );
    }
    let channel = tls.connect(server).await?;
    let mut interceptor = BearerToken::new(token)?;
    if let Some(p) = purpose {
        interceptor = interceptor.with_purpose(p)?;
    }
    let mut client = ParticipantServiceClient::with_interceptor(channel, interceptor);
    match command {
        ParticipantsCommand::Create {
            national_id,
            given_name,
            family_name,
            kommune,
            start_date,
            planned_end_date,
            nav_office,
            request_id,
        } => {
            let national_id = if national_id == "-" { read_stdin_line()? } else { national_id };
            let programme = Programme {
                start_date: Some(parse_date(&start_date, "--start-date")?),
                planned_end_date: planned_end_date
                    .as_deref()
                    .map(|d| parse_date(d, "--planned-end-date"))
                    .transpose()?,
                ..Default::default()
            };
            let p = client
                .create_participant(CreateParticipantRequest {
                    participant: Some(Participant {
                        national_id,
                        given_name,
                        family_name,
                        kommunenummer: kommune,
                        nav_office: nav_office.unwrap_or_default(),
                        programme: Some(programme),
                        ..Default::default()
                    }),
                    request_id: request_id.unwrap_or_default(),
                })
                .await
                .described()?
                .into_inner();
            print_participant(&p);
        }
        ParticipantsCommand::Get { name } => {
            let p = client.get_participant(GetParticipantRequest { name }).await.described()?.into_inner();
            print_participant(&p);
        }
        ParticipantsCommand::Lookup => {
            let national_id = read_stdin_line()?;
            if national_id.is_empty() {
                bail!("write the national id on stdin, e.g. `echo <number> | hurtigspor participants lookup`");
            }
            let p = client.lookup_participant(LookupParticipantRequest { national_id }).await.described()?.into_inner();
            print_participant(&p);
        }
        ParticipantsCommand::List { kommune, status, page_size, all } => {
            let status = status.as_deref().map(parse_status).transpose()?.map_or(0, |s| s as i32);
            let mut page_token = String::new();
            let mut total = 0;
            loop {
                let page = client
                    .list_participants(ListParticipantsRequest {
                        page_size,
                        page_token,
                        kommunenummer: kommune.clone().unwrap_or_default(),
                        hurtigspor_status: status,
                    })
                    .await
                    .described()?
                    .into_inner();
                for p in &page.participants {
                    let s =
                        HurtigsporStatus::try_from(p.hurtigspor.as_ref().map_or(0, |h| h.status)).unwrap_or_default();
                    println!(
                        "{}  {}  {:<22}  {} {}",
                        p.name,
                        p.kommunenummer,
                        hurtigspor::short_name(s),
                        p.given_name,
                        p.family_name
                    );
                }
                total += page.participants.len();
                if page.next_page_token.is_empty() {
                    break;
                }
                if !all {
                    println!("(more: repeat with --all to list every page)");
                    break;
                }
                page_token = page.next_page_token;
            }
            println!("{total} participant(s)");
        }
    }
    Ok(())
}
