using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// A Hugging Face directory without <c>sentence_bert_config.json</c> truncates where sentence-transformers does: its
/// Transformer module takes min(config.json max_position_embeddings, the tokenizer's model_max_length), and a tokenizer
/// without a limit (no tokenizer_config.json, no field, null, the 1e30 sentinel) leaves the positions. It stopped at
/// 256 before, so a 512-position model's long texts were cut in half and embedded unlike the Python library's.
/// </summary>
public class DirectoryMaxTokensTests
{
    // About 1,100 WordPiece tokens under either vocabulary: past 256 and past 512.
    private static readonly string LongText = string.Join(" ", Enumerable.Repeat("the quick brown fox jumps over the lazy dog", 120));

    private static readonly string TinyRandomBert = SharedData.Path("models", "hf-tiny-random-bert");

    /// <summary>hf-tiny-random-bert (512 positions) without its tokenizer_config.json, which the test then writes.</summary>
    private static TempDir TinyRandomBertWith(string? tokenizerConfig, string? sentenceBertConfig = null)
    {
        var temp = new TempDir("retrikt-bert-");
        foreach (var f in new[] { "config.json", "pytorch_model.bin", "vocab.txt" }) File.Copy(Path.Combine(TinyRandomBert, f), temp.File(f));
        if (tokenizerConfig is not null) File.WriteAllText(temp.File("tokenizer_config.json"), tokenizerConfig);
        if (sentenceBertConfig is not null) File.WriteAllText(temp.File("sentence_bert_config.json"), sentenceBertConfig);
        return temp;
    }

    private static int DefaultMaxTokens(string directory) => ManagedBertSentenceEncoder.Load(directory).MaxTokens;

    [SharedDataFact]
    public void RealDirectoriesTruncateAtTheSmallerOfPositionsAndTheTokenizersLimit()
    {
        // The real files as published: hf-tiny-random-bert's tokenizer says 512 (config 512 positions);
        // bert-uncased-tokenizer-golden's says 1000000000000000019884624838656 (transformers' "no limit"), positions 512.
        Assert.Contains("\"model_max_length\": 512", File.ReadAllText(Path.Combine(TinyRandomBert, "tokenizer_config.json")));
        Assert.False(File.Exists(Path.Combine(TinyRandomBert, "sentence_bert_config.json")));
        var golden = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        Assert.Contains("\"model_max_length\": 1000000000000000019884624838656", File.ReadAllText(Path.Combine(golden, "tokenizer_config.json")));
        Assert.False(File.Exists(Path.Combine(golden, "sentence_bert_config.json")));

        Assert.Equal(512, DefaultMaxTokens(TinyRandomBert));
        Assert.Equal(512, ManagedBertSentenceEncoder.Load(TinyRandomBert).Tokenize(LongText).Length);
        Assert.Equal(512, DefaultMaxTokens(golden));
        Assert.Equal(512, ManagedBertSentenceEncoder.Load(golden).Tokenize(LongText).Length);
        // The TorchSharp encoder reads the same source the same way.
        using var torch = BertSentenceEncoder.Load(new MLContext(seed: 1), golden);
        Assert.Equal(512, torch.MaxTokens);
        // An explicit option still wins.
        Assert.Equal(256, ManagedBertSentenceEncoder.Load(golden, new() { MaxTokens = 256 }).Tokenize(LongText).Length);
    }

    [SharedDataFact]
    public void TheTokenizersLimitAndItsAbsenceFollowTransformers()
    {
        // No tokenizer_config.json: the tokenizer has no limit, so the positions (512).
        using (var none = TinyRandomBertWith(tokenizerConfig: null)) Assert.Equal(512, DefaultMaxTokens(none.Path));
        // The sentinel written as a float, a field that is absent, and one that is null: the positions.
        using (var sentinel = TinyRandomBertWith("""{"do_lower_case": true, "model_max_length": 1e30}""")) Assert.Equal(512, DefaultMaxTokens(sentinel.Path));
        using (var absent = TinyRandomBertWith("""{"do_lower_case": true}""")) Assert.Equal(512, DefaultMaxTokens(absent.Path));
        using (var nullLimit = TinyRandomBertWith("""{"model_max_length": null, "max_len": 100}""")) Assert.Equal(512, DefaultMaxTokens(nullLimit.Path));
        // A tokenizer limit under the positions wins; one over them does not; the legacy max_len counts when model_max_length is absent.
        using (var shorter = TinyRandomBertWith("""{"model_max_length": 300}""")) Assert.Equal(300, ManagedBertSentenceEncoder.Load(shorter.Path).Tokenize(LongText).Length);
        using (var longer = TinyRandomBertWith("""{"model_max_length": 4096}""")) Assert.Equal(512, DefaultMaxTokens(longer.Path));
        using (var legacy = TinyRandomBertWith("""{"max_len": 200}""")) Assert.Equal(200, DefaultMaxTokens(legacy.Path));

        // Not a positive integer: refused naming the file and the field.
        using var bad = TinyRandomBertWith("""{"model_max_length": "512"}""");
        var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(bad.Path));
        Assert.Equal($"{bad.File("tokenizer_config.json")}: field 'model_max_length': expected a positive integer, found \"512\".", e.Message);
        File.WriteAllText(bad.File("tokenizer_config.json"), """{"model_max_length": 0}""");
        e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(bad.Path));
        Assert.Equal($"{bad.File("tokenizer_config.json")}: field 'model_max_length': expected a positive integer, found 0.", e.Message);
    }

    [SharedDataFact]
    public void SentenceBertConfigStillDecidesWhenItNamesALength()
    {
        // max_seq_length beats both the tokenizer's limit and the positions, as in sentence-transformers.
        using (var named = TinyRandomBertWith("""{"model_max_length": 512}""", """{"max_seq_length": 128}""")) Assert.Equal(128, DefaultMaxTokens(named.Path));
        // Without the field the Transformer module falls back to the same rule as a plain directory.
        using (var unnamed = TinyRandomBertWith("""{"model_max_length": 384}""", """{"do_lower_case": false}""")) Assert.Equal(384, DefaultMaxTokens(unnamed.Path));
    }

    [SharedDataFact]
    public void ALongTextNowEmbedsPastThe256thToken()
    {
        var encoder = ManagedBertSentenceEncoder.Load(TinyRandomBert);
        var at256 = ManagedBertSentenceEncoder.Load(TinyRandomBert, new() { MaxTokens = 256 });
        var at512 = ManagedBertSentenceEncoder.Load(TinyRandomBert, new() { MaxTokens = 512 });
        Assert.True(encoder.Vocabulary.Encode(LongText).Count > 510, "the text must run past both limits");
        var vector = encoder.Embed([LongText])[0];
        // The default is the 512-token embedding, bit for bit, and not the 256-token one.
        Assert.Equal(at512.Embed([LongText])[0], vector);
        var cut = at256.Embed([LongText])[0];
        double cosine = Enumerable.Range(0, vector.Length).Sum(i => (double)vector[i] * cut[i]); // both unit length
        Assert.True(cosine < 0.9999, $"cosine between the default and the 256-token embedding is {cosine}; the tokens after 256 changed nothing");
        Assert.Equal(at512.Fingerprint, encoder.Fingerprint);
        Assert.NotEqual(at256.Fingerprint, encoder.Fingerprint);
        // A short text is untouched.
        Assert.Equal(at256.Embed(["a short one"])[0], encoder.Embed(["a short one"])[0]);
    }

    private sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    [SharedDataFact]
    public void ASavedModelKeepsTheLimitItWasSavedWithAndNeverReadsTheDirectoryAgain()
    {
        // A model.zip saved before this change holds MaxTokens 256 for a directory without sentence_bert_config.json;
        // an explicit 256 writes the same bytes. Its load must not re-derive the limit, nor need the directory.
        var ml = new MLContext(seed: 1);
        using var temp = TinyRandomBertWith(File.ReadAllText(Path.Combine(TinyRandomBert, "tokenizer_config.json")));
        var old = ManagedBertSentenceEncoder.Load(temp.Path, new() { MaxTokens = 256 });
        Assert.Equal(512, DefaultMaxTokens(temp.Path));
        var texts = ml.Data.LoadFromEnumerable(new[] { new TextRow { Text = LongText }, new TextRow { Text = "a short one" } });
        var model = ml.RetriKT().SentenceEmbedding(old).Fit(texts);
        using var folder = new TempDir("retrikt-maxtokens-");
        var path = folder.File("model.zip");
        ml.Model.Save(model, texts.Schema, path);
        foreach (var file in Directory.GetFiles(temp.Path)) File.Delete(file);

        var reloaded = ml.Model.Load(path, out _);
        var loaded = reloaded as SentenceEmbeddingTransformer ?? ((TransformerChain<ITransformer>)reloaded).OfType<SentenceEmbeddingTransformer>().Single();
        Assert.Equal(256, loaded.Encoder.MaxTokens);
        Assert.Equal(old.Fingerprint, loaded.Encoder.Fingerprint);
        var expected = old.Embed([LongText, "a short one"]);
        Assert.Equal(expected, reloaded.Transform(texts).GetColumn<float[]>("Features").ToArray());
    }

    /// <summary>
    /// A tokenizer_config.json with <c>truncation_side</c> "left" makes transformers keep the END of a long text (and of
    /// each text of a pair); this encoder keeps the start, so it embedded another part of the text than the model's own
    /// tokenizer, without a word. It is refused naming the file and the value; "right" (transformers' default) loads.
    /// </summary>
    [SharedDataFact]
    public void ATokenizerThatCutsFromTheLeftIsRefused()
    {
        using (var right = TinyRandomBertWith("""{"do_lower_case": true, "truncation_side": "right"}"""))
            Assert.Equal(512, ManagedBertSentenceEncoder.Load(right.Path).Tokenize(LongText).Length);
        using var left = TinyRandomBertWith("""{"do_lower_case": true, "truncation_side": "left"}""");
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(left.Path));
        Assert.Equal($"{left.File("tokenizer_config.json")}: truncation_side \"left\" is not supported; this encoder keeps the start of a long text (truncation_side \"right\").", e.Message);
        Assert.Throws<NotSupportedException>(() => BertSentenceEncoder.Load(new MLContext(seed: 1), left.Path));
    }
}
