use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use crate::Broker;
use crate::broker::str_bytes;
use crate::config::{BROKER_CONFIGS, ConfigDef, ConfigSource, ConfigType, TOPIC_CONFIGS};

/// Kafka's `ConfigResource.Type` codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

struct Described<'a> {
    def: &'a ConfigDef,
    value: Option<String>,
    source: ConfigSource,
    read_only: bool,
    synonyms: Vec<(String, Option<String>, ConfigSource)>,
}

fn entry(
    d: Described<'_>,
    version: i16,
    synonyms: bool,
    docs: bool,
) -> DescribeConfigsResourceResult {
    let sensitive = d.def.ty == ConfigType::Password;
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(d.def.name))
        .with_value(if sensitive {
            None
        } else {
            d.value.map(str_bytes)
        })
        .with_read_only(d.read_only)
        .with_config_source(d.source as i8)
        .with_is_sensitive(sensitive);
    if synonyms {
        out.synonyms = d
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(if sensitive {
                        None
                    } else {
                        value.map(str_bytes)
                    })
                    .with_source(source as i8)
            })
            .collect();
    }
    if version >= 3 {
        out.config_type = d.def.ty as i8;
        if docs {
            out.documentation = Some(str_bytes(d.def.doc));
        }
    }
    out
}

impl Broker {
    pub(crate) fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let (synonyms, docs) = (request.include_synonyms, request.include_documentation);
        let synonyms_wanted = synonyms;
        let results = request
            .resources
            .iter()
            .map(|resource| {
                let name = resource.resource_name.to_string();
                // Null or empty key lists both mean every config.
                let wanted = |key: &str| {
                    resource.configuration_keys.as_ref().is_none_or(|keys| {
                        keys.is_empty() || keys.iter().any(|k| k.as_str() == key)
                    })
                };
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                let fail = |e: ResponseError, message: String| {
                    result
                        .clone()
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(message)))
                };
                let configs = match resource.resource_type {
                    RESOURCE_TOPIC => {
                        let Some(topic) = self.logs.topic(&name) else {
                            return fail(
                                ResponseError::UnknownTopicOrPartition,
                                format!("Topic '{name}' does not exist."),
                            );
                        };
                        self.topic_configs(&topic.configs, &wanted, version, synonyms, docs)
                    }
                    RESOURCE_BROKER if name.is_empty() => {
                        // The cluster-wide default resource lists only its dynamic values.
                        let config = self.config();
                        BROKER_CONFIGS
                            .iter()
                            .filter(|d| wanted(d.name))
                            .filter_map(|d| {
                                let value = config.dynamic(None).get(d.name)?.clone();
                                let source = ConfigSource::DynamicDefaultBrokerConfig;
                                let synonyms =
                                    vec![(d.name.to_string(), Some(value.clone()), source)];
                                let described = Described {
                                    def: d,
                                    value: Some(value),
                                    source,
                                    read_only: false,
                                    synonyms,
                                };
                                Some(entry(described, version, synonyms_wanted, docs))
                            })
                            .collect()
                    }
                    RESOURCE_BROKER if name == self.node_id.to_string() => {
                        self.broker_configs(&wanted, version, synonyms, docs)
                    }
                    RESOURCE_BROKER => {
                        return fail(
                            ResponseError::InvalidRequest,
                            format!("Broker {name} is not this broker ({})", self.node_id),
                        );
                    }
                    other => {
                        return fail(
                            ResponseError::InvalidRequest,
                            format!("Unsupported resource type {other}"),
                        );
                    }
                };
                result.with_configs(configs)
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    fn topic_configs(
        &self,
        overrides: &BTreeMap<String, String>,
        wanted: &dyn Fn(&str) -> bool,
        version: i16,
        synonyms: bool,
        docs: bool,
    ) -> Vec<DescribeConfigsResourceResult> {
        let broker = self.config();
        TOPIC_CONFIGS
            .iter()
            .filter(|d| wanted(d.def.name))
            .map(|d| {
                let (value, source) = broker.resolve_topic(d, overrides);
                let described = Described {
                    def: &d.def,
                    value,
                    source,
                    read_only: false,
                    synonyms: broker.topic_synonyms(d, overrides),
                };
                entry(described, version, synonyms, docs)
            })
            .collect()
    }

    fn broker_configs(
        &self,
        wanted: &dyn Fn(&str) -> bool,
        version: i16,
        synonyms: bool,
        docs: bool,
    ) -> Vec<DescribeConfigsResourceResult> {
        let broker = self.config();
        BROKER_CONFIGS
            .iter()
            .filter(|d| wanted(d.name))
            .filter_map(|d| {
                let (value, source) = broker.get(d.name)?;
                let value = value.map(str::to_string);
                let described = Described {
                    def: d,
                    value,
                    source,
                    read_only: !crate::config::is_dynamic(d.name),
                    synonyms: broker.broker_synonyms(d.name),
                };
                Some(entry(described, version, synonyms, docs))
            })
            .collect()
    }
}
