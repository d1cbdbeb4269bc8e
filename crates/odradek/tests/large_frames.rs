//! Requests large enough to be read into a pooled buffer of their own (64 KiB to 2 MiB),
//! arriving in pieces and pipelined with small ones.

mod support;

use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use support::*;

/// A Metadata request naming `count` topics that do not exist: about 50 bytes per name, and
/// the response names each one back, so a frame cut or mixed up anywhere shows.
fn metadata_for(count: usize) -> MetadataRequest {
    let topics = (0..count)
        .map(|i| {
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(
                format!("no-such-topic-{i:06}-padding-to-make-the-frame-large"),
            ))))
        })
        .collect();
    MetadataRequest::default()
        .with_topics(Some(topics))
        .with_allow_auto_topic_creation(false)
}

#[test]
fn a_large_request_trickled_in_pieces_and_pipelined_is_answered_whole_and_in_order() {
    let broker = BrokerProcess::start();
    let mut stream = raw_connect(&broker.addr);
    // 4,000 names: about 200 KB, inside the pooled range.
    let large = metadata_for(4000);
    let mut bytes = request_frame(&ApiVersionsRequest::default(), 0, 1);
    bytes.extend(request_frame(&large, 9, 2));
    let small_after = request_frame(&ApiVersionsRequest::default(), 0, 3);
    bytes.extend(&small_after);
    // Odd-sized pieces with pauses, so the large frame's size prefix, its body and the next
    // frame's first bytes arrive in separate reads and in shared ones.
    for (i, piece) in bytes.chunks(7919).enumerate() {
        stream.write_all(piece).expect("sending a piece");
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let (id, _) = decode_response::<ApiVersionsRequest>(read_frame(&mut stream).unwrap(), 0);
    assert_eq!(id, 1);
    let (id, metadata) = decode_response::<MetadataRequest>(read_frame(&mut stream).unwrap(), 9);
    assert_eq!(id, 2);
    let names: Vec<String> = metadata
        .topics
        .iter()
        .map(|t| t.name.as_ref().expect("topic name").to_string())
        .collect();
    let asked: Vec<String> = large
        .topics
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.name.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(names, asked);
    assert!(
        metadata.topics.iter().all(|t| t.error_code == 3),
        "every unknown topic answered UNKNOWN_TOPIC_OR_PARTITION"
    );
    let (id, _) = decode_response::<ApiVersionsRequest>(read_frame(&mut stream).unwrap(), 0);
    assert_eq!(id, 3);
}

#[test]
fn many_large_requests_back_to_back_reuse_buffers_and_stay_correct() {
    let broker = BrokerProcess::start();
    let mut stream = raw_connect(&broker.addr);
    // Different sizes, so a reused buffer is sometimes larger than the frame it receives.
    let sizes = [3000, 1500, 4000, 1400, 2500, 3900, 1600, 3000];
    let mut bytes = Vec::new();
    for (i, &count) in sizes.iter().enumerate() {
        bytes.extend(request_frame(&metadata_for(count), 9, i as i32));
    }
    stream.write_all(&bytes).expect("sending the requests");
    for (i, &count) in sizes.iter().enumerate() {
        let (id, metadata) =
            decode_response::<MetadataRequest>(read_frame(&mut stream).unwrap(), 9);
        assert_eq!(id, i as i32);
        assert_eq!(metadata.topics.len(), count);
        assert_eq!(
            metadata
                .topics
                .last()
                .unwrap()
                .name
                .as_ref()
                .unwrap()
                .as_str(),
            format!(
                "no-such-topic-{:06}-padding-to-make-the-frame-large",
                count - 1
            )
        );
    }
}
