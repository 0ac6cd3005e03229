//! Classifying ClickHouse failures: retry what may pass, never retry what the data itself causes.

/// What to do about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The data was refused (a parse or type error): retrying the same rows fails the same way, so they are dropped,
    /// counted and logged.
    Data,
    /// Anything that may pass: network errors, timeouts, 5xx, a server starting or overloaded, and also
    /// configuration problems (wrong password, missing table) that an operator fixes — dropping rows because of
    /// them would lose data, so they are retried (and the sink reports itself degraded).
    Retry,
}

/// ClickHouse exception codes caused by the rows themselves.
pub const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    19,  // SIZES_OF_NESTED_COLUMNS_ARE_INCONSISTENT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
];

/// The `Code: N` of a ClickHouse exception text, if any.
pub fn exception_code(message: &str) -> Option<u32> {
    let i = message.find("Code: ")?;
    let digits: String = message[i + 6..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Classifies a client error.
pub fn classify(e: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match e {
        E::BadResponse(msg) => match exception_code(msg) {
            Some(code) if DATA_ERROR_CODES.contains(&code) => ErrorClass::Data,
            _ => ErrorClass::Retry,
        },
        // Rows that cannot even be serialized are a data problem on our side.
        E::SequenceMustHaveLength | E::Custom(_) => ErrorClass::Data,
        _ => ErrorClass::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_old_and_new_exception_texts() {
        let old =
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: x";
        let new =
            "Code: 117. DB::Exception: Incorrect data: ... (INCORRECT_DATA) (version 26.9.1.1)";
        assert_eq!(exception_code(old), Some(27));
        assert_eq!(exception_code(new), Some(117));
        assert_eq!(exception_code("connection refused"), None);
        let e = clickhouse::error::Error::BadResponse(old.into());
        assert_eq!(classify(&e), ErrorClass::Data);
        let e = clickhouse::error::Error::BadResponse("Code: 252, Too many parts".into());
        assert_eq!(classify(&e), ErrorClass::Retry);
        let e = clickhouse::error::Error::BadResponse("Code: 516. Authentication failed".into());
        assert_eq!(classify(&e), ErrorClass::Retry);
        assert_eq!(
            classify(&clickhouse::error::Error::TimedOut),
            ErrorClass::Retry
        );
    }
}
