use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::Broker;
use crate::broker::SUPPORTED_APIS;

/// KIP-511: client software name and version must match `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`.
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && edge(&b[0])
        && edge(&b[b.len() - 1])
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

impl Broker {
    pub(crate) fn api_versions_response(&self, error_code: i16) -> ApiVersionsResponse {
        let api_keys = SUPPORTED_APIS
            .iter()
            .map(|&(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect();
        ApiVersionsResponse::default()
            .with_error_code(error_code)
            .with_api_keys(api_keys)
    }

    pub(crate) fn api_versions(
        &self,
        request: &ApiVersionsRequest,
        version: i16,
    ) -> ApiVersionsResponse {
        let invalid = version >= 3
            && !(valid_software_field(&request.client_software_name)
                && valid_software_field(&request.client_software_version));
        if invalid {
            return ApiVersionsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code());
        }
        self.api_versions_response(0)
    }
}
