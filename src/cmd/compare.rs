//! `inception compare`: two cross-validations of the same images, recipe A against recipe B
//! (`crate::cv::compare`).

use anyhow::Result;

use crate::cli::CompareArgs;
use crate::cv::compare::{compare, render};

pub fn run(args: &CompareArgs) -> Result<()> {
    let c = compare(&args.a, &args.b)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", render(&c));
    }
    Ok(())
}
