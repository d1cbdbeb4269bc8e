"""What kafka-python sees of a cluster through one bootstrap node: the brokers, each
partition's leader for one topic, and one record produced and read back through the
partitions' leaders. Prints JSON for crates/odradek/tests/cluster.rs to check."""

import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic, tag = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                         consumer_timeout_ms=10_000, auto_offset_reset="earliest")
partitions = sorted(consumer.partitions_for_topic(topic) or [])
cluster = consumer._client.cluster
leaders = {p: cluster.leader_for_partition(TopicPartition(topic, p)) for p in partitions}
brokers = sorted(b.node_id for b in cluster.brokers())

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000)
sent = {}
for p in partitions:
    meta = producer.send(topic, value=f"kafka-python {tag} {p}".encode(), partition=p).get(timeout=20)
    sent[p] = meta.offset
producer.close()

consumer.assign([TopicPartition(topic, p) for p in partitions])
read = {}
for message in consumer:
    if message.value == f"kafka-python {tag} {message.partition}".encode():
        read[message.partition] = message.offset
    if len(read) == len(partitions):
        break
consumer.close()
print(json.dumps({"brokers": brokers, "leaders": leaders, "sent": sent, "read": read}))
