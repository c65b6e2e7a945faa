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
    public void TinyRandomBertPyTorchCheckpointReproducesCaikitGoldens()
    {
        // pytorch_model.bin (zip + pickle) of a BertForSequenceClassification: vocab 1124, hidden 32, 5 layers, 4 heads.
        var dir = SharedData.Path("models", "hf-tiny-random-bert");
        using var golden = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "golden.json")));
        var published = golden.RootElement.GetProperty("published");
        double[] Numbers(System.Text.Json.JsonElement e, string name) => e.GetProperty(name).EnumerateArray().Select(x => x.GetDouble()).ToArray();

        using var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), dir, new BertSentenceEncoder.Options { Normalize = false });
        Assert.Equal(new BertConfig { VocabSize = 1124, HiddenSize = 32, NumLayers = 5, NumHeads = 4, IntermediateSize = 37, TypeVocabSize = 16 }, encoder.Config);

        // 1. Mean over all 38 tokens of "The quick brown fox ...", no normalisation (published first 3 values).
        var embedding = published[0];
        var text = embedding.GetProperty("input").GetString()!;
        Assert.Equal(38, encoder.Tokenize(text).Length);
        var vector = encoder.Embed([text])[0];
        var expected = Numbers(embedding, "expected_first3");
        for (int i = 0; i < 3; i++)
            Assert.True(Math.Abs(vector[i] - expected[i]) <= 1e-6 * Math.Abs(expected[i]) + 1e-7, $"dimension {i}: expected {expected[i]}, found {vector[i]}");

        // 2. Cross-encoder: classifier(tanh(pooler(h_CLS)))[0] on [CLS] q [SEP] d [SEP], token types all 0.
        var rerank = published[1];
        string query = rerank.GetProperty("query").GetString()!;
        var documents = rerank.GetProperty("documents").EnumerateArray().Select(d => d.GetString()!).ToList();
        var (_, all) = BertWeights.ReadCheckpoint(dir);
        var (classifierShape, classifier) = all["classifier.weight"];
        Assert.Equal([2L, 32L], classifierShape);
        float classifierBias = all["classifier.bias"].Data[0];
        var pairs = documents.Select(d => (int[])[encoder.Vocabulary.ClsId, .. encoder.Vocabulary.Encode(query), encoder.Vocabulary.SepId,
            .. encoder.Vocabulary.Encode(d), encoder.Vocabulary.SepId]).ToList();
        Assert.Equal(rerank.GetProperty("expected_total_input_tokens").GetInt32(), pairs.Sum(p => p.Length));
        var scores = new List<(string Document, double Score)>();
        using (var scope = TorchSharp.torch.NewDisposeScope())
        {
            var (ids, mask) = BertSentenceEncoder.ToTensors(pairs, encoder.Vocabulary.PadId, TorchSharp.torch.CPU);
            var pooled = encoder.Module.Pool(encoder.Module.Forward(ids, mask)).data<float>().ToArray();
            for (int d = 0; d < documents.Count; d++)
                scores.Add((documents[d], classifierBias + Enumerable.Range(0, 32).Sum(j => (double)classifier[j] * pooled[d * 32 + j])));
        }
        var top = scores.OrderByDescending(s => s.Score).Take(3).ToList();
        var expectedScores = Numbers(rerank, "expected_top3_scores");
        Assert.Equal(["bar", "foo", "Where is the bar"], top.Select(t => t.Document));
        for (int i = 0; i < 3; i++)
            Assert.True(Math.Abs(top[i].Score - expectedScores[i]) <= 1e-6, $"rank {i + 1} ('{top[i].Document}'): expected {expectedScores[i]}, found {top[i].Score}");
    }

    [SharedDataFact]
    public void PackageModelSavedAsHuggingFaceDirectoryLoadsBackToTheSameEmbeddings()
    {
        var ml = new MLContext(seed: 1);
        var sentences = BertEncoderParityTests.Sentences().Take(24).ToList();
        var options = new BertSentenceEncoder.Options { Pooling = BertPooling.Cls };
        using var temp = new TempDir("retrikt-bert-");
        var dir = temp.Path;
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

        // Without options the directory reloads as what was saved: arctic's [CLS] pooling and 512 tokens (it came back
        // mean-pooled with 256 tokens before the sentence-transformers files were written), in both runtimes.
        using var plain = BertSentenceEncoder.Load(ml, dir);
        Assert.Equal((BertPooling.Cls, 512, true), (plain.Pooling, plain.MaxTokens, plain.Vocabulary.LowerCase));
        var managed = ManagedBertSentenceEncoder.Load(dir);
        Assert.Equal((BertPooling.Cls, 512), (managed.Pooling, managed.MaxTokens));
        actual = plain.Embed(sentences);
        for (int i = 0; i < sentences.Count; i++)
            Assert.True(expected[i].SequenceEqual(actual[i]), $"sentence {i} '{sentences[i]}' embeds differently after the round trip without options");
    }

    [SharedDataFact]
    public void MissingOrMisshapenTensorsFailWithTheirName()
    {
        using var temp = new TempDir("retrikt-bert-");
        var dir = temp.Path;
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

    [SharedDataFact]
    public void TruncatedPackageModelFailsWithOneClearLine()
    {
        var (name, model) = EmbeddedResources.ReadBySuffix(PretrainedEncoderPackage.MiniLM.Locate(), "model.onnx");
        var e = Assert.Throws<InvalidDataException>(() => BertWeights.FromOnnx(model.AsMemory(0, model.Length / 2), 12, 1e-12, name));
        Assert.Contains(name, e.Message);
        Assert.Contains("truncated", e.Message);
    }
}
