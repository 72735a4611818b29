//! E-mail lists cost the server no heap allocation per recipient when sent as
//! `recipient_lines`: the whole Filter call (client and server in this process) is counted by
//! a global allocator, beside the same list as `repeated string`, which prost decodes into one
//! `String` per address (proving the counter sees per-recipient allocations).

use std::alloc::System;
use std::sync::Arc;

use clap::Parser;
use iysgate::api::pb;
use iysgate::auth::{hash_key, to_hex};
use iysgate::config::{Cli, Command};
use iysgate::domain::{Channel, SystemClock};
use iysgate::server::{self, App};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

const KEY: &str = "iysk_filter_alloc";
const CHUNKS: usize = 10;
const PER_CHUNK: usize = 10_000;

async fn filter(
    client: &mut pb::consent_check_client::ConsentCheckClient<tonic::transport::Channel>,
    chunks: Vec<pb::FilterRequest>,
) -> (u64, u32) {
    let mut request = tonic::Request::new(tokio_stream::iter(chunks));
    request
        .metadata_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    let before = allocations();
    let mut replies = client.filter(request).await.unwrap().into_inner();
    let mut answered = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        answered += reply.count;
    }
    (allocations() - before, answered)
}

#[tokio::test(flavor = "current_thread")]
async fn email_lines_cost_no_allocation_per_recipient() {
    let argv = [
        "iysgate".to_owned(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "off".into(),
        "--client".into(),
        format!("name=lists;sha256={};brands=600001", to_hex(&hash_key(KEY))),
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let app = Arc::new(App::embedded(&args, Arc::new(SystemClock)).unwrap());
    iysgate::demo::generate(
        &app.consents,
        20_000,
        7,
        iysgate::domain::Clock::now_turkey(&SystemClock),
    );
    let listener = server::bind(args.listen).await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    {
        let (app, stop) = (Arc::clone(&app), stop.clone());
        tokio::spawn(async move {
            let tasks = TaskTracker::new();
            app.spawn_embedded_heartbeat(&tasks, stop.clone());
            server::serve_grpc(&app, &args, listener, stop, &tasks).await
        });
    }
    let channel = tonic::transport::Endpoint::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::consent_check_client::ConsentCheckClient::new(channel)
        .max_encoding_message_size(16 << 20);

    let pool = iysgate::load::demo_recipients(20_000, 7, 2_000, Channel::Eposta);
    let list: Vec<&String> = pool.iter().cycle().take(CHUNKS * PER_CHUNK).collect();
    let first = |mut c: pb::FilterRequest| {
        c.brand_code = 600_001;
        c.channel = pb::Channel::Eposta.into();
        c
    };
    let as_lines: Vec<pb::FilterRequest> = list
        .chunks(PER_CHUNK)
        .enumerate()
        .map(|(i, part)| {
            let mut text = String::new();
            for r in part {
                text.push_str(r);
                text.push('\n');
            }
            let c = pb::FilterRequest {
                recipient_lines: text.into(),
                ..Default::default()
            };
            if i == 0 { first(c) } else { c }
        })
        .collect();
    let as_strings: Vec<pb::FilterRequest> = list
        .chunks(PER_CHUNK)
        .enumerate()
        .map(|(i, part)| {
            let c = pb::FilterRequest {
                recipients: part.iter().map(|r| (*r).clone()).collect(),
                ..Default::default()
            };
            if i == 0 { first(c) } else { c }
        })
        .collect();

    let total = (CHUNKS * PER_CHUNK) as u64;
    let (lines_allocs, answered) = filter(&mut client, as_lines).await;
    assert_eq!(u64::from(answered), total);
    let (strings_allocs, answered) = filter(&mut client, as_strings).await;
    assert_eq!(u64::from(answered), total);
    println!(
        "{total} e-mail recipients: {lines_allocs} allocations as recipient_lines, {strings_allocs} as repeated string"
    );
    assert!(
        strings_allocs >= total,
        "prost allocates each string: {strings_allocs}"
    );
    assert!(
        lines_allocs < total / 20,
        "recipient_lines must not allocate per recipient: {lines_allocs} for {total}"
    );
    stop.cancel();
}
