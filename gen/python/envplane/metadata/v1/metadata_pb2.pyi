from buf.validate import validate_pb2 as _validate_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
REPAIR_ADOPT: Repair
REPAIR_REAPPLY: Repair
REPAIR_UNSPECIFIED: Repair

class DeleteObjectRequest(_message.Message):
    __slots__ = ["environment_id", "force", "name"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    force: bool
    name: str
    def __init__(self, environment_id: _Optional[str] = ..., name: _Optional[str] = ..., force: bool = ...) -> None: ...

class DeleteObjectResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Field(_message.Message):
    __slots__ = ["default_value", "description", "indexed", "max_length", "name", "options", "required", "type", "unique"]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    default_value: _struct_pb2.Value
    description: str
    indexed: bool
    max_length: int
    name: str
    options: _containers.RepeatedScalarFieldContainer[str]
    required: bool
    type: str
    unique: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., required: bool = ..., unique: bool = ..., max_length: _Optional[int] = ..., options: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., indexed: bool = ...) -> None: ...

class GetObjectRequest(_message.Message):
    __slots__ = ["environment_id", "name"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    name: str
    def __init__(self, environment_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetObjectResponse(_message.Message):
    __slots__ = ["object"]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    object: ObjectDefinition
    def __init__(self, object: _Optional[_Union[ObjectDefinition, _Mapping]] = ...) -> None: ...

class Index(_message.Message):
    __slots__ = ["fields", "name", "unique"]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    name: str
    unique: bool
    def __init__(self, name: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., unique: bool = ...) -> None: ...

class ListObjectsRequest(_message.Message):
    __slots__ = ["environment_id", "page_size", "page_token"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    page_size: int
    page_token: str
    def __init__(self, environment_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListObjectsResponse(_message.Message):
    __slots__ = ["next_page_token", "objects"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    objects: _containers.RepeatedCompositeFieldContainer[ObjectDefinition]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectDefinition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MigrationStep(_message.Message):
    __slots__ = ["description", "destructive", "kind", "target"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DESTRUCTIVE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    description: str
    destructive: bool
    kind: str
    target: str
    def __init__(self, kind: _Optional[str] = ..., target: _Optional[str] = ..., description: _Optional[str] = ..., destructive: bool = ...) -> None: ...

class ObjectDefinition(_message.Message):
    __slots__ = ["create_time", "description", "display_name", "drift", "fields", "indexes", "name", "update_time", "version"]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    create_time: _timestamp_pb2.Timestamp
    description: str
    display_name: str
    drift: str
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    indexes: _containers.RepeatedCompositeFieldContainer[Index]
    name: str
    update_time: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., indexes: _Optional[_Iterable[_Union[Index, _Mapping]]] = ..., drift: _Optional[str] = ...) -> None: ...

class PutObjectRequest(_message.Message):
    __slots__ = ["allow_destructive", "environment_id", "name", "object", "repair", "validate_only"]
    ALLOW_DESTRUCTIVE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    allow_destructive: bool
    environment_id: str
    name: str
    object: ObjectDefinition
    repair: Repair
    validate_only: bool
    def __init__(self, environment_id: _Optional[str] = ..., name: _Optional[str] = ..., object: _Optional[_Union[ObjectDefinition, _Mapping]] = ..., allow_destructive: bool = ..., validate_only: bool = ..., repair: _Optional[_Union[Repair, str]] = ...) -> None: ...

class PutObjectResponse(_message.Message):
    __slots__ = ["applied", "object", "steps"]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    object: ObjectDefinition
    steps: _containers.RepeatedCompositeFieldContainer[MigrationStep]
    def __init__(self, object: _Optional[_Union[ObjectDefinition, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[MigrationStep, _Mapping]]] = ..., applied: bool = ...) -> None: ...

class Repair(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
