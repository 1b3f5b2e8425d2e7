from buf.validate import validate_pb2 as _validate_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchWriteRecordsRequest(_message.Message):
    __slots__ = ["environment_id", "writes"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    writes: _containers.RepeatedCompositeFieldContainer[RecordWrite]
    def __init__(self, environment_id: _Optional[str] = ..., writes: _Optional[_Iterable[_Union[RecordWrite, _Mapping]]] = ...) -> None: ...

class BatchWriteRecordsResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordWriteResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordWriteResult, _Mapping]]] = ...) -> None: ...

class CreateRecordRequest(_message.Message):
    __slots__ = ["environment_id", "object", "record"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    object: str
    record: _struct_pb2.Struct
    def __init__(self, environment_id: _Optional[str] = ..., object: _Optional[str] = ..., record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateRecordResponse(_message.Message):
    __slots__ = ["record"]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _struct_pb2.Struct
    def __init__(self, record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DeleteRecordRequest(_message.Message):
    __slots__ = ["environment_id", "etag", "id", "object"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    etag: str
    id: str
    object: str
    def __init__(self, environment_id: _Optional[str] = ..., object: _Optional[str] = ..., id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteRecordResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ["environment_id", "id", "object", "read_mask"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    READ_MASK_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    id: str
    object: str
    read_mask: _field_mask_pb2.FieldMask
    def __init__(self, environment_id: _Optional[str] = ..., object: _Optional[str] = ..., id: _Optional[str] = ..., read_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class GetRecordResponse(_message.Message):
    __slots__ = ["record"]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _struct_pb2.Struct
    def __init__(self, record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListRecordsRequest(_message.Message):
    __slots__ = ["environment_id", "filter", "object", "order_by", "page_size", "page_token", "read_mask", "show_total_size"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    READ_MASK_FIELD_NUMBER: _ClassVar[int]
    SHOW_TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    filter: str
    object: str
    order_by: str
    page_size: int
    page_token: str
    read_mask: _field_mask_pb2.FieldMask
    show_total_size: bool
    def __init__(self, environment_id: _Optional[str] = ..., object: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., show_total_size: bool = ..., read_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class ListRecordsResponse(_message.Message):
    __slots__ = ["next_page_token", "records", "total_size"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    records: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    total_size: int
    def __init__(self, records: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class RecordWrite(_message.Message):
    __slots__ = ["create", "delete", "update"]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    create: CreateRecordRequest
    delete: DeleteRecordRequest
    update: UpdateRecordRequest
    def __init__(self, create: _Optional[_Union[CreateRecordRequest, _Mapping]] = ..., update: _Optional[_Union[UpdateRecordRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRecordRequest, _Mapping]] = ...) -> None: ...

class RecordWriteResult(_message.Message):
    __slots__ = ["record"]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _struct_pb2.Struct
    def __init__(self, record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateRecordRequest(_message.Message):
    __slots__ = ["environment_id", "etag", "id", "object", "record", "update_mask"]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    etag: str
    id: str
    object: str
    record: _struct_pb2.Struct
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, environment_id: _Optional[str] = ..., object: _Optional[str] = ..., id: _Optional[str] = ..., record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateRecordResponse(_message.Message):
    __slots__ = ["record"]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _struct_pb2.Struct
    def __init__(self, record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
