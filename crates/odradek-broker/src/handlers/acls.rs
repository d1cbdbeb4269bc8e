//! DescribeAcls, CreateAcls and DeleteAcls. Odradek has no authorizer yet, so it answers as
//! a Kafka broker without `authorizer.class.name` does: `SECURITY_DISABLED` for every
//! request, filter and creation. Admin tools and consoles that list ACLs then show that
//! security is off instead of failing on an API the broker does not know.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::Broker;

/// Kafka's own words for it.
const NO_AUTHORIZER: &str = "No Authorizer is configured.";

fn disabled() -> (i16, Option<StrBytes>) {
    (
        ResponseError::SecurityDisabled.code(),
        Some(StrBytes::from_static_str(NO_AUTHORIZER)),
    )
}

impl Broker {
    pub(crate) fn describe_acls(&self, _request: DescribeAclsRequest) -> DescribeAclsResponse {
        let (code, message) = disabled();
        DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(message)
    }

    pub(crate) fn create_acls(&self, request: CreateAclsRequest) -> CreateAclsResponse {
        let (code, message) = disabled();
        CreateAclsResponse::default().with_results(
            request
                .creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(message.clone())
                })
                .collect(),
        )
    }

    pub(crate) fn delete_acls(&self, request: DeleteAclsRequest) -> DeleteAclsResponse {
        let (code, message) = disabled();
        DeleteAclsResponse::default().with_filter_results(
            request
                .filters
                .iter()
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(code)
                        .with_error_message(message.clone())
                })
                .collect(),
        )
    }
}
