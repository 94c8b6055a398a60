from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_QUALITY: _ClassVar[Mode]
    MODE_BALANCED: _ClassVar[Mode]
    MODE_COST: _ClassVar[Mode]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_ROUTE: _ClassVar[Action]
    ACTION_ACCEPT: _ClassVar[Action]

class AttemptStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_STATUS_UNSPECIFIED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_OK: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_FAILED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_SKIPPED: _ClassVar[AttemptStatus]

class Stop(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_UNSPECIFIED: _ClassVar[Stop]
    STOP_ACCEPTED: _ClassVar[Stop]
    STOP_MAX_ROUNDS: _ClassVar[Stop]
    STOP_BUDGET: _ClassVar[Stop]
    STOP_FAILED: _ClassVar[Stop]
    STOP_REFUSED: _ClassVar[Stop]
    STOP_DEADLINE: _ClassVar[Stop]
    STOP_CANCELLED: _ClassVar[Stop]
MODE_UNSPECIFIED: Mode
MODE_QUALITY: Mode
MODE_BALANCED: Mode
MODE_COST: Mode
ACTION_UNSPECIFIED: Action
ACTION_ROUTE: Action
ACTION_ACCEPT: Action
ATTEMPT_STATUS_UNSPECIFIED: AttemptStatus
ATTEMPT_STATUS_OK: AttemptStatus
ATTEMPT_STATUS_FAILED: AttemptStatus
ATTEMPT_STATUS_SKIPPED: AttemptStatus
STOP_UNSPECIFIED: Stop
STOP_ACCEPTED: Stop
STOP_MAX_ROUNDS: Stop
STOP_BUDGET: Stop
STOP_FAILED: Stop
STOP_REFUSED: Stop
STOP_DEADLINE: Stop
STOP_CANCELLED: Stop

class Endpoint(_message.Message):
    __slots__ = ("base_url", "model_name", "api_key_env")
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    base_url: str
    model_name: str
    api_key_env: str
    def __init__(self, base_url: _Optional[str] = ..., model_name: _Optional[str] = ..., api_key_env: _Optional[str] = ...) -> None: ...

class ModelDescriptor(_message.Message):
    __slots__ = ("id", "input_price_per_mtok", "output_price_per_mtok", "latency_ms", "context_window", "sample_scores", "sample_counts", "probe_results", "mean_output_tokens", "description", "tags", "endpoint")
    class SampleScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SampleCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ProbeResultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SCORES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROBE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    latency_ms: float
    context_window: int
    sample_scores: _containers.ScalarMap[str, float]
    sample_counts: _containers.ScalarMap[str, int]
    probe_results: _containers.ScalarMap[str, float]
    mean_output_tokens: float
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    endpoint: Endpoint
    def __init__(self, id: _Optional[str] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., latency_ms: _Optional[float] = ..., context_window: _Optional[int] = ..., sample_scores: _Optional[_Mapping[str, float]] = ..., sample_counts: _Optional[_Mapping[str, int]] = ..., probe_results: _Optional[_Mapping[str, float]] = ..., mean_output_tokens: _Optional[float] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_input_price_per_mtok", "max_output_price_per_mtok", "max_est_cost_usd", "min_context_window")
    MAX_INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    MAX_EST_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    max_input_price_per_mtok: float
    max_output_price_per_mtok: float
    max_est_cost_usd: float
    min_context_window: int
    def __init__(self, max_input_price_per_mtok: _Optional[float] = ..., max_output_price_per_mtok: _Optional[float] = ..., max_est_cost_usd: _Optional[float] = ..., min_context_window: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("model_id", "response", "cost_usd")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    response: str
    cost_usd: float
    def __init__(self, model_id: _Optional[str] = ..., response: _Optional[str] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("query", "knob", "mode", "allow", "deny", "limits", "think_budget", "attempts", "domain", "prompt_tokens", "request_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    KNOB_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    THINK_BUDGET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    knob: float
    mode: Mode
    allow: _containers.RepeatedScalarFieldContainer[str]
    deny: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    think_budget: int
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    domain: str
    prompt_tokens: int
    request_id: str
    def __init__(self, query: _Optional[str] = ..., knob: _Optional[float] = ..., mode: _Optional[_Union[Mode, str]] = ..., allow: _Optional[_Iterable[str]] = ..., deny: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., think_budget: _Optional[int] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., domain: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RankedModel(_message.Message):
    __slots__ = ("model_id", "probability")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    probability: float
    def __init__(self, model_id: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("model_id", "action", "ranking", "think", "est_cost_usd", "router", "request_id", "registry_version", "knob")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    THINK_FIELD_NUMBER: _ClassVar[int]
    EST_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    KNOB_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    action: Action
    ranking: _containers.RepeatedCompositeFieldContainer[RankedModel]
    think: str
    est_cost_usd: float
    router: str
    request_id: str
    registry_version: int
    knob: float
    def __init__(self, model_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., ranking: _Optional[_Iterable[_Union[RankedModel, _Mapping]]] = ..., think: _Optional[str] = ..., est_cost_usd: _Optional[float] = ..., router: _Optional[str] = ..., request_id: _Optional[str] = ..., registry_version: _Optional[int] = ..., knob: _Optional[float] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("query", "knob", "mode", "allow", "deny", "limits", "domain", "prompt_tokens", "request_id", "max_rounds", "budget_usd", "key_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    KNOB_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    knob: float
    mode: Mode
    allow: _containers.RepeatedScalarFieldContainer[str]
    deny: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    domain: str
    prompt_tokens: int
    request_id: str
    max_rounds: int
    budget_usd: float
    key_id: str
    def __init__(self, query: _Optional[str] = ..., knob: _Optional[float] = ..., mode: _Optional[_Union[Mode, str]] = ..., allow: _Optional[_Iterable[str]] = ..., deny: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., domain: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., request_id: _Optional[str] = ..., max_rounds: _Optional[int] = ..., budget_usd: _Optional[float] = ..., key_id: _Optional[str] = ...) -> None: ...

class ModelAttempt(_message.Message):
    __slots__ = ("round", "model_id", "status", "reason", "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd", "fallback", "think", "response")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    THINK_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    round: int
    model_id: str
    status: AttemptStatus
    reason: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    fallback: bool
    think: str
    response: str
    def __init__(self, round: _Optional[int] = ..., model_id: _Optional[str] = ..., status: _Optional[_Union[AttemptStatus, str]] = ..., reason: _Optional[str] = ..., latency_ms: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., fallback: _Optional[bool] = ..., think: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("answer", "model_id", "attempts", "total_cost_usd", "think", "request_id", "router", "stop", "message", "key_id", "registry_version", "knob", "fallback")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    THINK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    KNOB_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    answer: str
    model_id: str
    attempts: _containers.RepeatedCompositeFieldContainer[ModelAttempt]
    total_cost_usd: float
    think: str
    request_id: str
    router: str
    stop: Stop
    message: str
    key_id: str
    registry_version: int
    knob: float
    fallback: bool
    def __init__(self, answer: _Optional[str] = ..., model_id: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[ModelAttempt, _Mapping]]] = ..., total_cost_usd: _Optional[float] = ..., think: _Optional[str] = ..., request_id: _Optional[str] = ..., router: _Optional[str] = ..., stop: _Optional[_Union[Stop, str]] = ..., message: _Optional[str] = ..., key_id: _Optional[str] = ..., registry_version: _Optional[int] = ..., knob: _Optional[float] = ..., fallback: _Optional[bool] = ...) -> None: ...

class CompleteEvent(_message.Message):
    __slots__ = ("attempt", "result")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    attempt: ModelAttempt
    result: CompleteResponse
    def __init__(self, attempt: _Optional[_Union[ModelAttempt, _Mapping]] = ..., result: _Optional[_Union[CompleteResponse, _Mapping]] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelDescriptor
    def __init__(self, model: _Optional[_Union[ModelDescriptor, _Mapping]] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ("model", "registry_version", "probe_results_omitted", "etag")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBE_RESULTS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    model: ModelDescriptor
    registry_version: int
    probe_results_omitted: bool
    etag: str
    def __init__(self, model: _Optional[_Union[ModelDescriptor, _Mapping]] = ..., registry_version: _Optional[int] = ..., probe_results_omitted: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateModelRequest(_message.Message):
    __slots__ = ("model", "update_mask", "etag")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    model: ModelDescriptor
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, model: _Optional[_Union[ModelDescriptor, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateModelResponse(_message.Message):
    __slots__ = ("model", "registry_version", "probe_results_omitted", "etag")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBE_RESULTS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    model: ModelDescriptor
    registry_version: int
    probe_results_omitted: bool
    etag: str
    def __init__(self, model: _Optional[_Union[ModelDescriptor, _Mapping]] = ..., registry_version: _Optional[int] = ..., probe_results_omitted: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class RemoveModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RemoveModelResponse(_message.Message):
    __slots__ = ("registry_version",)
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    registry_version: int
    def __init__(self, registry_version: _Optional[int] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model", "registry_version", "probe_results_omitted", "etag")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBE_RESULTS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    model: ModelDescriptor
    registry_version: int
    probe_results_omitted: bool
    etag: str
    def __init__(self, model: _Optional[_Union[ModelDescriptor, _Mapping]] = ..., registry_version: _Optional[int] = ..., probe_results_omitted: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "omit_probe_results")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OMIT_PROBE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    omit_probe_results: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., omit_probe_results: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "registry_version", "next_page_token", "probe_results_omitted")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROBE_RESULTS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelDescriptor]
    registry_version: int
    next_page_token: str
    probe_results_omitted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelDescriptor, _Mapping]]] = ..., registry_version: _Optional[int] = ..., next_page_token: _Optional[str] = ..., probe_results_omitted: _Optional[_Iterable[str]] = ...) -> None: ...
