using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// A sentence-transformers directory declares its pooling (modules.json → 1_Pooling/config.json). It was not read: a
/// [CLS]-pooled directory (bge, arctic-embed) was mean-pooled without a word. It is read now, and what the encoder
/// cannot compute (max pooling, a Dense module) is refused naming the file.
/// </summary>
public class DirectoryPoolingTests
{
    private const string Modules = """
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
         {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
        """;

    private static string PoolingConfig(string mode) =>
        $$"""{"word_embedding_dimension": 32, "pooling_mode_cls_token": {{(mode == "cls" ? "true" : "false")}}, "pooling_mode_mean_tokens": {{(mode == "mean" ? "true" : "false")}}, "pooling_mode_max_tokens": {{(mode == "max" ? "true" : "false")}}, "pooling_mode_mean_sqrt_len_tokens": false}""";

    private static TempDir SentenceTransformersDirectory(string mode, string modules = Modules)
    {
        var temp = new TempDir("retrikt-bert-");
        var source = SharedData.Path("models", "hf-tiny-random-bert");
        foreach (var f in new[] { "config.json", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json" }) File.Copy(Path.Combine(source, f), temp.File(f));
        File.WriteAllText(temp.File("modules.json"), modules);
        Directory.CreateDirectory(temp.File("1_Pooling"));
        File.WriteAllText(Path.Combine(temp.File("1_Pooling"), "config.json"), PoolingConfig(mode));
        return temp;
    }

    [SharedDataFact]
    public void ClsPooledDirectoryIsClsPooled()
    {
        string[] texts = ["The quick brown fox jumps over the lazy dog.", "a charming and often affecting journey", ""];
        var plain = SharedData.Path("models", "hf-tiny-random-bert");
        using var cls = SentenceTransformersDirectory("cls");
        var encoder = ManagedBertSentenceEncoder.Load(cls.Path);
        Assert.Equal(BertPooling.Cls, encoder.Pooling);
        var expected = ManagedBertSentenceEncoder.Load(plain, new() { Pooling = BertPooling.Cls }).Embed(texts);
        var actual = encoder.Embed(texts);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(expected[i], actual[i]);
        Assert.Equal(ManagedBertSentenceEncoder.Load(plain, new() { Pooling = BertPooling.Cls }).Fingerprint, encoder.Fingerprint);

        // Mean declared, and a plain Hugging Face directory (no modules.json): mean, as before.
        using var mean = SentenceTransformersDirectory("mean");
        Assert.Equal(BertPooling.Mean, ManagedBertSentenceEncoder.Load(mean.Path).Pooling);
        Assert.Equal(BertPooling.Mean, ManagedBertSentenceEncoder.Load(plain).Pooling);
        // The caller's explicit choice still wins over the directory's.
        Assert.Equal(BertPooling.Mean, ManagedBertSentenceEncoder.Load(cls.Path, new() { Pooling = BertPooling.Mean }).Pooling);
    }

    [SharedDataFact]
    public void PoolingOrModulesTheEncoderCannotComputeAreRefused()
    {
        using var max = SentenceTransformersDirectory("max");
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(max.Path));
        Assert.StartsWith(Path.Combine(max.Path, "1_Pooling", "config.json") + ": pooling pooling_mode_max_tokens is not supported", e.Message);

        // A Dense projection after pooling changes every embedding; running without it would be silently wrong.
        var dense = Modules.Replace("sentence_transformers.models.Normalize", "sentence_transformers.models.Dense").Replace("2_Normalize", "2_Dense");
        using var withDense = SentenceTransformersDirectory("mean", dense);
        e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(withDense.Path));
        Assert.StartsWith(withDense.File("modules.json") + ": module ", e.Message);
        Assert.Contains("sentence_transformers.models.Dense", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
