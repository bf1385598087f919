//! The hurtigspor report over many participants: time and peak memory of the
//! streaming computation (one participant's history at a time, the change
//! log read in pages), against reading every history into memory first and
//! folding it (the baseline), in the same run and on the same database.
//!
//! Run: `cargo bench -p hurtigspor-gateway --bench report`
//! (optional: `-- <participants>`, default 10000). Each participant has two
//! versions in the change log: registered in hurtigspor with a measure, then
//! moved to work. Peak memory is the process's peak resident set above what
//! was resident when each computation started (Linux); the streamed one runs
//! first, so memory the baseline leaves to the allocator cannot flatter it.
//! Last, the per-participant listing reads every participant's dates a page
//! of 500 at a time (each page resumes after the last participant listed,
//! so the whole listing reads the change log once).

use chrono::NaiveDate;
use hurtigspor_gateway::{
    audit::AuditKey,
    domain::dates::to_proto,
    report::{Fold, Tally, compute, participants},
    store::{ChangeKind, Location, Mutation, NewParticipant, Origin, Store, StoreOptions},
};
use hurtigspor_proto::v1::{
    Hurtigspor, HurtigsporReport, HurtigsporStatus, HurtigsporTransition, Measure, MeasureKind, MeasureStatus, Outcome,
    OutcomeKind, Participant, Programme,
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

/// A field of `/proc/self/status` in bytes (Linux), e.g. `VmRSS`.
fn status_bytes(field: &str) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `f`, returning its result, seconds taken and the peak resident
/// memory above what was resident when it started (the kernel's high-water
/// mark, reset through `/proc/self/clear_refs`).
async fn measured<T>(f: impl std::future::Future<Output = T>) -> (T, f64, usize) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    assert!(reset, "this bench needs Linux's /proc/self/clear_refs to reset the peak");
    let base = status_bytes("VmRSS").unwrap_or(0);
    let start = Instant::now();
    let out = f.await;
    let secs = start.elapsed().as_secs_f64();
    (out, secs, status_bytes("VmHWM").unwrap_or(0).saturating_sub(base))
}

fn date(y: i32, m: u32, d: u32) -> Option<hurtigspor_proto::google::r#type::Date> {
    Some(to_proto(NaiveDate::from_ymd_opt(y, m, d).unwrap()))
}

/// Participant `n`: in one of six kommuner, confirmed into hurtigspor with a
/// wage subsidy or work training at one of 50 employers.
fn registered(n: usize) -> Participant {
    let kommuner = ["0301", "4601", "5001", "3107", "5501", "1103"];
    let (m, d) = (1 + (n % 12) as u32, 1 + (n % 28) as u32);
    Participant {
        given_name: format!("Bench{n}"),
        family_name: "Report".into(),
        kommunenummer: kommuner[n % kommuner.len()].into(),
        programme: Some(Programme { start_date: date(2025, m, d), ..Default::default() }),
        hurtigspor: Some(Hurtigspor {
            status: HurtigsporStatus::Confirmed as i32,
            start_date: date(2026, m, d),
            history: vec![HurtigsporTransition {
                from_status: HurtigsporStatus::Candidate as i32,
                to_status: HurtigsporStatus::Confirmed as i32,
                effective_date: date(2026, m, d),
                ..Default::default()
            }],
            ..Default::default()
        }),
        measures: vec![Measure {
            id: format!("m-{n:016x}"),
            kind: if n.is_multiple_of(2) { MeasureKind::TemporaryWageSubsidy } else { MeasureKind::WorkTraining }
                as i32,
            employer_orgnr: format!("9100000{:02}", n % 50),
            start_date: date(2026, m, d),
            status: MeasureStatus::Active as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The baseline: every history read into memory at once, then folded.
async fn load_everything(store: &dyn Store, as_of: NaiveDate) -> HurtigsporReport {
    let all = store.histories(None, usize::MAX >> 1).await.unwrap();
    let mut tally = Tally::new(None, 2026, as_of).unwrap();
    let mut fold: Option<Fold> = None;
    for r in all {
        if fold.as_ref().is_none_or(|f| f.id() != r.participant_id)
            && let Some(done) = fold.replace(Fold::new(&r.participant_id))
        {
            tally.add(&done.finish());
        }
        fold.as_mut().unwrap().push(r.snapshot);
    }
    if let Some(done) = fold {
        tally.add(&done.finish());
    }
    tally.finish()
}

/// Every participant's dates, a page of 500 at a time as the CLI's
/// `--participants` reads them; how many were listed.
async fn list_everyone(store: &dyn Store, as_of: NaiveDate) -> usize {
    let (mut after, mut listed) = (None, 0);
    loop {
        let (page, more) = participants(store, None, 2026, as_of, after, 500).await.unwrap().unwrap();
        listed += page.len();
        after = page.last().map(|d| d.id.clone());
        if !more {
            return listed;
        }
    }
}

fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
        let location = Location::Sqlite(dir.path().join("report.db"));
        let (store, _) =
            hurtigspor_gateway::store::open(StoreOptions::new(location, AuditKey::new(rand::random()))).await.unwrap();
        eprintln!("registering {total} participants with two versions each ...");
        let next = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..64)
            .map(|_| {
                let (store, next) = (store.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let id = format!("{n:032x}");
                        store
                            .create(NewParticipant {
                                id: id.clone(),
                                national_id: format!("{n:011}"),
                                national_id_hash: rand::random::<[u8; 32]>().to_vec(),
                                record: registered(n),
                                idempotency: None,
                                origin: Origin::Api,
                                actor: "bench".into(),
                                audit: None,
                            })
                            .await
                            .unwrap();
                        let (m, d) = (1 + (n % 12) as u32, 1 + (n % 28) as u32);
                        store
                            .mutate(Mutation {
                                id,
                                expected_etag: None,
                                idempotency: None,
                                kind: ChangeKind("hurtigspor.transitioned"),
                                origin: Origin::Api,
                                actor: "bench".into(),
                                kommuner: None,
                                audit: None,
                                apply: Box::new(move |p| {
                                    let h = p.hurtigspor.get_or_insert_with(Default::default);
                                    h.history.push(HurtigsporTransition {
                                        from_status: h.status,
                                        to_status: HurtigsporStatus::Employed as i32,
                                        effective_date: date(2026, m.max(6), d),
                                        ..Default::default()
                                    });
                                    h.status = HurtigsporStatus::Employed as i32;
                                    p.outcome = Some(Outcome {
                                        kind: OutcomeKind::EmploymentFull as i32,
                                        date: date(2026, m.max(6), d),
                                        employer_orgnr: format!("9100000{:02}", n % 50),
                                        position_percent: if n % 3 == 0 { 60 } else { 100 },
                                    });
                                    Ok(())
                                }),
                            })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let as_of = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        println!("report for the country, 2026, over {total} participants ({} change-log rows)", 2 * total);
        let (streamed, secs, peak) = measured(compute(&*store, None, 2026, as_of, 500)).await;
        let (baseline, base_secs, base_peak) = measured(load_everything(&*store, as_of)).await;
        let (listed, list_secs, list_peak) = measured(list_everyone(&*store, as_of)).await;
        assert_eq!(listed, total, "the listing pages through everyone once");
        let streamed = streamed.unwrap().unwrap();
        assert_eq!(streamed, baseline, "both ways give the same report");
        assert_eq!(streamed.participants_in_hurtigspor as usize, total);
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        println!(
            "  all histories in memory (baseline): {:>7.0} ms  peak memory {:>7.2} MiB  1.00x  1.00x",
            base_secs * 1e3,
            mib(base_peak)
        );
        println!(
            "  streamed, 500 rows per page:        {:>7.0} ms  peak memory {:>7.2} MiB  {:.2}x  {:.3}x",
            secs * 1e3,
            mib(peak),
            secs / base_secs,
            peak as f64 / base_peak.max(1) as f64
        );
        println!(
            "{:<38}{:>7.0} ms  peak memory {:>7.2} MiB  {:.2}x  {:.3}x",
            format!("  dates per participant, {} pages:", total.div_ceil(500)),
            list_secs * 1e3,
            mib(list_peak),
            list_secs / base_secs,
            list_peak as f64 / base_peak.max(1) as f64
        );
        store.close().await;
    });
}
