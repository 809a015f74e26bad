//! A protobuf message taken as a payload without the `Proto` wrapper.
use pitaya_guest::prelude::*;

#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct AddRequest {
    #[prost(int32, tag = "1")]
    a: i32,
}

#[derive(Default)]
struct Calc;

#[component(name = "calc")]
impl Calc {
    #[request]
    fn add(request: AddRequest) -> Result<i32> {
        Ok(request.a)
    }
}

fn main() {}
