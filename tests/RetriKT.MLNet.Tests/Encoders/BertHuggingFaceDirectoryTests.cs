using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>BERT encoders from Hugging Face directories (config.json + model.safetensors + vocab.txt).</summary>
public class BertHuggingFaceDirectoryTests
{
    [SharedDataFact]
    public void LoadsRealHuggingFaceBertDirectoryWithPrefixAndTaskHeads()
    {
        // bert.* names, a BertLMHeadModel's cls.* head (skipped), hidden 4, 1 layer, 1 head; random weights, so shape only.
        var dir = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        using var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), dir);
        Assert.Equal(new BertConfig { HiddenSize = 4, NumLayers = 1, NumHeads = 1, IntermediateSize = 8 }, encoder.Config);
        Assert.Equal(BertPooling.Mean, encoder.Pooling);
        var vectors = encoder.Embed(["Hello world", "a charming and often affecting journey", ""]);
        Assert.All(vectors, v => Assert.Equal(4, v.Length));
        Assert.All(vectors, v => Assert.Equal(1.0, Math.Sqrt(v.Sum(x => (double)x * x)), 4));
        Assert.Equal([101, 7592, 2088, 102], encoder.Tokenize("Hello world"));
    }

    [SharedDataFact]
    public void PackageModelSavedAsHuggingFaceDirectoryLoadsBackToTheSameEmbeddings()
    {
        var ml = new MLContext(seed: 1);
        var sentences = BertEncoderParityTests.Sentences().Take(24).ToList();
        var options = new BertSentenceEncoder.Options { Pooling = BertPooling.Cls };
        var dir = Path.Combine(Path.GetTempPath(), "retrikt-bert-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            float[][] expected;
            using (var package = BertSentenceEncoder.Load(ml, PretrainedEncoderPackage.ArcticXs, options))
            {
                expected = package.Embed(sentences);
                package.SaveHuggingFaceDirectory(dir);
            }
            using var reloaded = BertSentenceEncoder.Load(ml, dir, options);
            Assert.Equal(new BertConfig(), reloaded.Config);
            var actual = reloaded.Embed(sentences);
            for (int i = 0; i < sentences.Count; i++)
                Assert.True(expected[i].SequenceEqual(actual[i]), $"sentence {i} '{sentences[i]}' embeds differently after the round trip");
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    [SharedDataFact]
    public void MissingOrMisshapenTensorsFailWithTheirName()
    {
        var dir = Path.Combine(Path.GetTempPath(), "retrikt-bert-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            Directory.CreateDirectory(dir);
            var source = SharedData.Path("models", "bert-uncased-tokenizer-golden");
            foreach (var f in new[] { "model.safetensors", "vocab.txt" }) File.Copy(Path.Combine(source, f), Path.Combine(dir, f));
            // The config claims 2 layers; the weights hold 1.
            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(source, "config.json")).Replace("\"num_hidden_layers\": 1", "\"num_hidden_layers\": 2"));
            var e = Assert.Throws<InvalidDataException>(() => BertSentenceEncoder.Load(new MLContext(seed: 1), dir));
            Assert.Contains("encoder.layer.1.attention.self.query.weight", e.Message);
            Assert.Contains("model.safetensors", e.Message);

            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(source, "config.json")).Replace("\"intermediate_size\": 8", "\"intermediate_size\": 9"));
            e = Assert.Throws<InvalidDataException>(() => BertSentenceEncoder.Load(new MLContext(seed: 1), dir));
            Assert.Contains("encoder.layer.0.intermediate.dense.weight' has shape [8,4], expected [9,4]", e.Message);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    [SharedDataFact]
    public void TruncatedPackageModelFailsWithOneClearLine()
    {
        var (name, model) = EmbeddedResources.ReadBySuffix(PretrainedEncoderPackage.MiniLM.Locate(), "model.onnx");
        var e = Assert.Throws<InvalidDataException>(() => BertWeights.FromOnnx(model.AsMemory(0, model.Length / 2), 12, 1e-12, name));
        Assert.Contains(name, e.Message);
        Assert.Contains("truncated", e.Message);
    }
}
