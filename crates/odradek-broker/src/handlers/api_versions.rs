use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::Broker;
use crate::broker::{SUPPORTED_APIS, str_bytes};

/// A feature this release serves: the levels it supports, and the one a new cluster
/// finalizes.
pub(crate) struct Feature {
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    pub finalized: i16,
}

/// The features Odradek serves, at Kafka's levels. `metadata.version` 25 is Kafka's 4.0-IV3
/// (7 is 3.3-IV3, the oldest Kafka 4 reads): the APIs themselves are negotiated one by one
/// through ApiVersions, so it is what tools show rather than what clients act on.
/// `group.version` 1 is the KIP-848 consumer group protocol. `transaction.version` is not
/// offered: at 2 clients would use KIP-890's second part, which is not served, and a range
/// with a minimum of 0 breaks older Java clients, which read supported features.
pub(crate) const FEATURES: &[Feature] = &[
    Feature {
        name: "metadata.version",
        min: 7,
        max: 25,
        finalized: 25,
    },
    Feature {
        name: "group.version",
        min: 1,
        max: 1,
        finalized: 1,
    },
];

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
        let mut response = self.api_versions_response(0);
        if version >= 3 {
            // KIP-584: what this broker supports, and what the cluster finalized (the
            // metadata log's records), with the image's log index as the epoch.
            response.supported_features = FEATURES
                .iter()
                .map(|f| {
                    SupportedFeatureKey::default()
                        .with_name(str_bytes(f.name))
                        .with_min_version(f.min)
                        .with_max_version(f.max)
                })
                .collect();
            let (epoch, image) = self.logs.image_with_index();
            response.finalized_features_epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
            response.finalized_features = image
                .features
                .iter()
                .map(|(name, level)| {
                    FinalizedFeatureKey::default()
                        .with_name(str_bytes(name.clone()))
                        .with_min_version_level(*level)
                        .with_max_version_level(*level)
                })
                .collect();
        }
        response
    }
}
