//! Scripts that must be refused, and how the refusal reads.

mod common;

use common::error;

#[test]
fn unknown_command_with_line() {
    let e = error("require \"fileinto\";\nif true {\n  fileinot \"x\";\n}\n");
    assert_eq!(e.to_string(), "line 3: unknown command \"fileinot\"");
    assert_eq!((e.line, e.column), (3, 3));
}

#[test]
fn messages_and_positions() {
    let cases: &[(&str, usize, &str)] = &[
        ("fileinto \"x\";", 1, "command \"fileinto\" needs require \"fileinto\""),
        ("require \"nope\";", 1, "unsupported extension \"nope\""),
        ("keep;\nrequire \"fileinto\";", 2, "\"require\" must come before any other command"),
        ("if true {\n keep;\n", 3, "missing \"}\" at end of script"),
        ("keep", 1, "missing \";\" after command \"keep\""),
        ("\n\nif header :iz \"a\" \"b\" { keep; }", 3, "unknown tag \":iz\" for \"header\""),
        ("if foo { keep; }", 1, "unknown test \"foo\""),
        ("if header \"a\" { keep; }", 1, "\"header\" needs the key list"),
        ("if size 5 { keep; }", 1, "\"size\" needs :over or :under"),
        ("if size :over \"5\" { keep; }", 1, "\"size\" expects a number for the size limit"),
        ("elsif true { keep; }", 1, "\"elsif\" without a preceding \"if\""),
        ("if true { keep; } keep; else { keep; }", 1, "\"else\" without a preceding \"if\""),
        ("if header :is :contains \"a\" \"b\" { keep; }", 1, "more than one match type"),
        ("require \"copy\"; redirect :copy :copy \"a@b.example\";", 1, "tag \":copy\" given twice"),
        ("if header :comparator \"i;nope\" \"a\" \"b\" { keep; }", 1, "unknown comparator \"i;nope\""),
        (
            "if header :comparator \"i;ascii-numeric\" \"a\" \"b\" { keep; }",
            1,
            "comparator \"i;ascii-numeric\" needs require \"comparator-i;ascii-numeric\"",
        ),
        ("if header :count \"eq\" \"a\" \"1\" { keep; }", 1, "\":count\" needs require \"relational\""),
        ("keep \"x\";", 1, "too many arguments for \"keep\""),
        ("redirect \"not an address\";", 1, "invalid redirect address \"not an address\""),
        ("if true keep;", 1, "\"true\" takes no tests"),
        ("if true { keep; } }", 1, "expected a command, found \"}\""),
        ("keep :copy;", 1, "unknown tag \":copy\" for \"keep\""),
        ("if \"x\" { }", 1, "\"if\" takes a test, not arguments"),
        ("if allof true { }", 1, "\"allof\" needs a test list in parentheses"),
        ("\"x\";", 1, "expected a command, found a string"),
        ("keep; /* open", 1, "unterminated comment"),
        ("reject \"x", 1, "unterminated string"),
        ("require \"reject\"; reject text:\nno end\n", 1, "multi-line string not ended by a line with a single \".\""),
        ("if size :over 99999999999G { }", 1, "number too large"),
        ("require \"variables\"; set \"a b\" \"c\";", 1, "invalid variable name \"a b\""),
        ("require \"variables\"; set :lower :upper \"a\" \"c\";", 1, "\":upper\" conflicts with another modifier"),
        ("require \"envelope\"; if envelope \"cc\" \"x\" { }", 1, "unknown envelope part \"cc\""),
        (
            "if header :contains :comparator \"i;octet\" [\"a\" \"b\"] \"x\" {}",
            1,
            "expected \",\" or \"]\" in a string list",
        ),
        ("keep;\n\n  @", 3, "unexpected character '@'"),
        ("if header :is \"Sub ject\" \"x\" {}", 1, "invalid header name \"Sub ject\""),
        ("if exists [\"a\", \"b:\"] {}", 1, "invalid header name \"b:\""),
    ];
    for (script, line, message) in cases {
        let e = error(script);
        assert_eq!((e.line, e.message.as_str()), (*line, *message), "{script}");
    }
}
