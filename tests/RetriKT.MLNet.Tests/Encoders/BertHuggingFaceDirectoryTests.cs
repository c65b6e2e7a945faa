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
            // caikit's published setting: token types all 0 (its tokenizer call drops them), so the types are not passed.
            var (ids, mask, _) = BertSentenceEncoder.ToTensors(pairs, encoder.Vocabulary.PadId, encoder.Vocabulary.SepId, TorchSharp.torch.CPU);
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

    /// <summary>
    /// A sentence pair as Hugging Face's tokenizer encodes it, [CLS] q [SEP] d [SEP] with token types 0 for [CLS] q [SEP]
    /// and 1 for d [SEP]: both encoders against the shared folder's independent float64 forward pass with those types
    /// (golden.json, derived_by_helper, "with_segment_ids_0_then_1"). The tiny BERT has 16 token types, so type 1 moves
    /// every score; with all 0 the same pairs give the published numbers instead (the test above).
    /// </summary>
    [SharedDataFact]
    public void SentencePairsGetTokenTypeOneForTheSecondTextAsHuggingFaceEncodesThem()
    {
        var dir = SharedData.Path("models", "hf-tiny-random-bert");
        using var golden = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "golden.json")));
        var expected = golden.RootElement.GetProperty("derived_by_helper").EnumerateObject()
            .Single(p => p.Name.StartsWith("cross_encoder_logits_with_segment_ids_0_then_1", StringComparison.Ordinal)).Value
            .EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
        var zeroTypes = golden.RootElement.GetProperty("derived_by_helper").GetProperty("cross_encoder_logits_token_type_zero")
            .EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
        const string query = "What is foo bar?";
        var documents = expected.Keys.ToList();
        Assert.Equal(4, documents.Count);
        var (_, all) = BertWeights.ReadCheckpoint(dir);
        var classifier = all["classifier.weight"].Data;
        float classifierBias = all["classifier.bias"].Data[0];
        double Score(ReadOnlySpan<float> pooled) { double s = classifierBias; for (int j = 0; j < 32; j++) s += classifier[j] * pooled[j]; return s; }

        using var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), dir, new BertSentenceEncoder.Options { Normalize = false });
        var pairs = documents.Select(d => encoder.Tokenize(query, d)).ToList();
        // TorchSharp: the token types ToTensors gives, through the checkpoint's pooler and classifier.
        using (var scope = TorchSharp.torch.NewDisposeScope())
        {
            var (ids, mask, types) = BertSentenceEncoder.ToTensors(pairs, encoder.Vocabulary.PadId, encoder.Vocabulary.SepId, TorchSharp.torch.CPU);
            var typeRows = types.data<long>().ToArray();
            int t = (int)ids.shape[1];
            for (int i = 0; i < pairs.Count; i++)
            {
                int second = Array.IndexOf(pairs[i], encoder.Vocabulary.SepId) + 1;
                for (int j = 0; j < t; j++)
                    Assert.Equal(j >= second && j < pairs[i].Length ? 1 : 0, typeRows[i * t + j]);
            }
            var pooled = encoder.Module.Pool(encoder.Module.Forward(ids, mask, types)).data<float>().ToArray();
            for (int d = 0; d < documents.Count; d++)
            {
                double score = Score(pooled.AsSpan(d * 32, 32));
                Assert.True(Math.Abs(score - expected[documents[d]]) <= 1e-6, $"TorchSharp, '{documents[d]}': expected {expected[documents[d]]}, found {score}");
                Assert.True(Math.Abs(score - zeroTypes[documents[d]]) > 1e-5, $"'{documents[d]}' scores as if its token types were all 0");
            }
        }

        // Managed: the runtime's forward pass with the same split, [CLS] state through the pooler (tanh(W·h + b)).
        var weights = BertWeights.FromHuggingFaceDirectory(dir);
        var managed = new ManagedBertEncoder(weights, encoder.Vocabulary.SepId, PairSegments.SecondTextOne);
        var poolerW = all["bert.pooler.dense.weight"].Data;
        var poolerB = all["bert.pooler.dense.bias"].Data;
        foreach (var (document, ids) in documents.Zip(pairs))
        {
            int second = BertEncoderSource.SecondSegmentStart(ids, encoder.Vocabulary.SepId, PairSegments.SecondTextOne);
            Assert.Equal(Array.IndexOf(ids, encoder.Vocabulary.SepId) + 1, second);
            var states = managed.States(ids, weights.Config.NumLayers);
            var pooled = new float[32];
            for (int o = 0; o < 32; o++)
            {
                double s = poolerB[o];
                for (int j = 0; j < 32; j++) s += poolerW[o * 32 + j] * states[j];
                pooled[o] = (float)Math.Tanh(s);
            }
            double score = Score(pooled);
            Assert.True(Math.Abs(score - expected[document]) <= 1e-6, $"managed, '{document}': expected {expected[document]}, found {score}");
        }
        // A single text has no second segment, and the saved convention of older models keeps type 0 throughout.
        var single = encoder.Tokenize(query);
        Assert.Equal(single.Length, BertEncoderSource.SecondSegmentStart(single, encoder.Vocabulary.SepId, PairSegments.SecondTextOne));
        Assert.Equal(pairs[0].Length, BertEncoderSource.SecondSegmentStart(pairs[0], encoder.Vocabulary.SepId, PairSegments.AllZero));
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
