use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use crate::Broker;
use crate::broker::str_bytes;

/// Without an authorizer a client may do every operation Kafka defines on a resource; these
/// are the `AclOperation` bits (CREATE=5, ALTER=7, DESCRIBE=8, CLUSTER_ACTION=9,
/// DESCRIBE_CONFIGS=10, ALTER_CONFIGS=11, IDEMPOTENT_WRITE=12; READ=3, WRITE=4, DELETE=6).
const fn bits(ops: &[u32]) -> i32 {
    let mut out = 0;
    let mut i = 0;
    while i < ops.len() {
        out |= 1 << ops[i];
        i += 1;
    }
    out
}
pub(crate) const ALL_CLUSTER_OPERATIONS: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);
pub(crate) const ALL_TOPIC_OPERATIONS: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// A group supports READ, DELETE and DESCRIBE.
pub(crate) const ALL_GROUP_OPERATIONS: i32 = bits(&[3, 6, 8]);

impl Broker {
    pub(crate) fn describe_cluster(
        &self,
        request: DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        // Endpoint type 1 asks for brokers, 2 for controllers; this node is both.
        if !(1..=2).contains(&request.endpoint_type) {
            return DescribeClusterResponse::default()
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_endpoint_type(request.endpoint_type);
        }
        let (host, port) = self.advertised.clone();
        DescribeClusterResponse::default()
            .with_endpoint_type(request.endpoint_type)
            .with_cluster_id(str_bytes(self.cluster_id.clone()))
            .with_controller_id(self.node_id.into())
            .with_brokers(vec![
                DescribeClusterBroker::default()
                    .with_broker_id(self.node_id.into())
                    .with_host(str_bytes(host))
                    .with_port(port),
            ])
            .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
                ALL_CLUSTER_OPERATIONS
            } else {
                i32::MIN
            })
    }
}
