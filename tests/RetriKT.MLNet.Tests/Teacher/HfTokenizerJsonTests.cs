using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// Byte-level BPE tokenizer.json files read as Hugging Face runs them (added tokens, normalizer, pre-tokenizer,
/// ignore_merges). The fixtures are small synthetic tokenizers carrying the real Qwen2 / LLaMA-3 sections; their
/// goldens come from transformers.js (Fixtures/hf-tokenizers/README.md).
/// </summary>
public class HfTokenizerJsonTests
{
    private static string Fixture(string name, string file = "tokenizer.json") =>
        Path.Combine(AppContext.BaseDirectory, "Teacher", "Fixtures", "hf-tokenizers", name, file);

    [Theory]
    [InlineData("qwen2-style", 216)]
    [InlineData("llama3-style", 216)]
    [InlineData("mixed-style", 215)]
    public void ReproducesTransformersJsIds(string name, int count)
    {
        var tokenizer = TeacherTokenizer.FromTokenizerJson(Fixture(name));
        var cases = JsonDocument.Parse(File.ReadAllText(Fixture(name, "golden.json"))).RootElement.EnumerateArray().ToList();
        Assert.Equal(count, cases.Count);
        var wrong = new List<string>();
        foreach (var c in cases)
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var actual = tokenizer.Encode(text);
            if (!expected.SequenceEqual(actual)) wrong.Add($"{JsonSerializer.Serialize(text)}: expected [{string.Join(",", expected)}], got [{string.Join(",", actual)}]");
        }
        Assert.True(wrong.Count == 0, $"{wrong.Count} of {cases.Count} differ:\n" + string.Join("\n", wrong.Take(10)));
    }

    [Fact]
    public void QwenAndLlamaSectionsChangeTheIdsWhereGpt2sSplitWouldNot()
    {
        var qwen = TeacherTokenizer.FromTokenizerJson(Fixture("qwen2-style"));
        int imStart = qwen.VocabSize - 4;
        // Qwen2: one digit per piece, "(word" one piece, NFC before the split, chat tokens whole.
        Assert.Equal(qwen.Encode("1") .Concat(qwen.Encode("2")).Concat(qwen.Encode("3")), qwen.Encode("123"));
        Assert.Equal(qwen.Encode("caf\u00e9"), qwen.Encode("cafe\u0301"));
        Assert.Equal([imStart], qwen.Encode("<|im_start|>"));
        Assert.Equal("<|im_start|>user\nhi", qwen.Decode(qwen.Encode("<|im_start|>user\nhi")));

        var llama = TeacherTokenizer.FromTokenizerJson(Fixture("llama3-style"));
        var vocab = JsonNode.Parse(File.ReadAllText(Fixture("llama3-style")))!["model"]!["vocab"]!;
        // ignore_merges: whole pre-tokens in the vocabulary that the merges never build come out as one id.
        Assert.Equal([vocab["(word"]!.GetValue<int>()], llama.Encode("(word"));
        Assert.Equal([vocab["123"]!.GetValue<int>(), vocab["123"]!.GetValue<int>()], llama.Encode("123123"));
        Assert.Equal([vocab["\u010a\u010a"]!.GetValue<int>()], llama.Encode("\n\n"));
        Assert.Null(llama.EosId); // no <|endoftext|>: the special ids come from the model's config.json
    }

    [Fact]
    public void FolderWithTokenizerJsonAndVocabAndMergesReadsTheJson()
    {
        using var dir = new TempDir();
        var json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        File.Copy(Fixture("qwen2-style"), dir.File("tokenizer.json"));
        // The same vocabulary and merges as GPT-2-style files, as a Qwen2 folder ships them.
        var vocab = json["model"]!["vocab"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>());
        foreach (var added in json["added_tokens"]!.AsArray()) vocab[added!["content"]!.GetValue<string>()] = added["id"]!.GetValue<int>();
        File.WriteAllText(dir.File("vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllLines(dir.File("merges.txt"), ["#version: 0.2", .. json["model"]!["merges"]!.AsArray().Select(m => $"{m![0]} {m[1]}")]);

        var loaded = TeacherTokenizer.Load(dir.Path);
        Assert.Equal([dir.File("tokenizer.json")], loaded.SourceFiles);
        var golden = TeacherTokenizer.FromTokenizerJson(Fixture("qwen2-style"));
        foreach (var text in new[] { "x=10,y=200", "(word", "a\n\n\nb", "<|im_start|>user", "cafe\u0301" })
            Assert.Equal(golden.Encode(text), loaded.Encode(text));
        // The GPT-2-style pair alone still loads (with GPT-2's split, which differs on digits).
        var pair = TeacherTokenizer.FromGpt2Files(dir.File("vocab.json"), dir.File("merges.txt"));
        Assert.NotEqual(golden.Encode("x=10,y=200"), pair.Encode("x=10,y=200"));
    }

    public static TheoryData<string, string, string> Unsupported => new()
    {
        { "pre_tokenizer", """{"type":"Whitespace"}""", "pre_tokenizer type 'Whitespace' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"WhitespaceSplit"}""", "pre_tokenizer type 'WhitespaceSplit' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"BertPreTokenizer"}""", "pre_tokenizer type 'BertPreTokenizer' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Punctuation","behavior":"Isolated"}""", "pre_tokenizer type 'Punctuation' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Metaspace","replacement":"▁"}""", "pre_tokenizer type 'Metaspace' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"CharDelimiterSplit","delimiter":" "}""", "pre_tokenizer type 'CharDelimiterSplit' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"UnicodeScripts"}""", "pre_tokenizer type 'UnicodeScripts' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"FixedLength","length":5}""", "pre_tokenizer type 'FixedLength' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":false},{"type":"Whitespace"}]}""", "pre_tokenizer type 'Whitespace' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Split","pattern":{"Regex":"\\s"},"behavior":"MergedWithPrevious","invert":false}""", "pre_tokenizer Split behavior 'MergedWithPrevious' is not supported (supported: Isolated, Removed)." },
        { "pre_tokenizer", """{"type":"Split","pattern":{"Regex":"\\s"},"behavior":"MergedWithNext","invert":false}""", "pre_tokenizer Split behavior 'MergedWithNext' is not supported (supported: Isolated, Removed)." },
        { "pre_tokenizer", """{"type":"Split","pattern":{"Regex":"\\s"},"behavior":"Contiguous","invert":false}""", "pre_tokenizer Split behavior 'Contiguous' is not supported (supported: Isolated, Removed)." },
        { "pre_tokenizer", "null", "pre_tokenizer [] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last)." },
        { "pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"ByteLevel","add_prefix_space":false,"use_regex":false},{"type":"Digits"}]}""", "pre_tokenizer [ByteLevel, Digits] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last)." },
        { "pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"ByteLevel","use_regex":true},{"type":"ByteLevel","use_regex":false}]}""", "pre_tokenizer [ByteLevel, ByteLevel] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last)." },
        { "normalizer", """{"type":"Lowercase"}""", "normalizer type 'Lowercase' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Strip","strip_left":true,"strip_right":true}""", "normalizer type 'Strip' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"StripAccents"}""", "normalizer type 'StripAccents' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Replace","pattern":{"String":" "},"content":"▁"}""", "normalizer type 'Replace' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Prepend","prepend":"▁"}""", "normalizer type 'Prepend' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"BertNormalizer","lowercase":true}""", "normalizer type 'BertNormalizer' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"Lowercase"}]}""", "normalizer type 'Lowercase' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
    };

    [Theory]
    [MemberData(nameof(Unsupported))]
    public void UnsupportedSectionIsRefusedInOneLineNamingTheFile(string field, string section, string message)
    {
        using var dir = new TempDir();
        var json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        json[field] = JsonNode.Parse(section);
        var path = dir.File("tokenizer.json");
        File.WriteAllText(path, json.ToJsonString());
        var e = Assert.Throws<NotSupportedException>(() => TeacherTokenizer.FromTokenizerJson(path));
        Assert.Equal($"{path}: {message}", e.Message);
        Assert.Equal($"{path}: {message}", Assert.Throws<NotSupportedException>(() => TeacherTokenizer.Load(dir.Path)).Message);
    }

    [Fact]
    public void SingleWordAddedTokenAndModelAffixesAreRefused()
    {
        using var dir = new TempDir();
        var path = dir.File("tokenizer.json");
        var json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        json["added_tokens"]![1]!["single_word"] = true;
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal($"{path}: added token '<|im_start|>' has single_word true, which is not supported.",
            Assert.Throws<NotSupportedException>(() => TeacherTokenizer.FromTokenizerJson(path)).Message);

        json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        json["model"]!["continuing_subword_prefix"] = "##";
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal($"{path}: model.continuing_subword_prefix '##' is not supported for byte-level BPE.",
            Assert.Throws<NotSupportedException>(() => TeacherTokenizer.FromTokenizerJson(path)).Message);
    }

    [SharedDataFact]
    public void Gpt2SplitsCharactersOutsideTheBmpByTheirCategory()
    {
        // transformers.js (and HF) ids: U+1D7D7 (a digit outside the BMP) is a digit, so "'ll" after it is a contraction.
        var gpt2 = TeacherTokenizer.FromTokenizerJson(TeacherGoldenTests.Models("gpt2-tokenizer-golden", "tokenizer.json"));
        Assert.Equal([995, 438, 2634, 24861, 239, 47728, 253, 245, 1183], gpt2.Encode(" world--\u00e9\u2211\U0001D7D7'll"));
    }
}
