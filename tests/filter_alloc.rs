//! E-mail lists cost the server no heap allocation per recipient when sent as
//! `recipient_lines`: the whole Filter call (client and server in this process) is counted by
//! a global allocator, beside the same list as `repeated string`, which prost decodes into one
//! `String` per address (proving the counter sees per-recipient allocations).

mod common;

use std::alloc::System;

use iysgate::auth::{hash_key, to_hex};
use iysgate::domain::Channel;
use iysgate::pb;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio_util::sync::CancellationToken;

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
    let stop = CancellationToken::new();
    let clients = [format!(
        "name=lists;sha256={};brands=600001",
        to_hex(&hash_key(KEY))
    )];
    let addr = common::demo_server(20_000, 7, &clients, &stop).await;
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
