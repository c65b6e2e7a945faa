using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Xunit.Abstractions;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// The pretrained encoders from the SentenceTransformers.* packages (restored by PackageDownload, read from the DLL):
/// our TorchSharp BERT against ONNX Runtime running the very ONNX graph the weights came from, on real sentences.
/// </summary>
public class BertEncoderParityTests(ITestOutputHelper output)
{
    internal static PretrainedEncoderPackage Package(string name) => name == "MiniLM" ? PretrainedEncoderPackage.MiniLM : PretrainedEncoderPackage.ArcticXs;

    /// <summary>64 SST-2 dev sentences (the first ones) plus the 46 tokenizer-golden texts (accents, CJK, emoji, empty).</summary>
    internal static List<string> Sentences()
    {
        var sst2 = File.ReadLines(SharedData.Path("data", "SST-2", "dev.tsv")).Skip(1).Take(64).Select(l => l.Split('\t')[0]);
        using var golden = JsonDocument.Parse(File.ReadAllText(SharedData.Path("models", "bert-uncased-tokenizer-golden", "golden.json")));
        var tricky = golden.RootElement.GetProperty("cases").EnumerateArray().Select(c => c.GetProperty("text").GetString()!);
        return [.. sst2, .. tricky];
    }

    [SharedDataFact]
    public void MiniLMMeanPooledEmbeddingsMatchOnnxRuntimeOnRealSentences() => AssertParity("MiniLM");

    [SharedDataFact]
    public void ArcticXsClsPooledEmbeddingsMatchOnnxRuntimeOnRealSentences() => AssertParity("ArcticXs");

    private void AssertParity(string name)
    {
        var package = Package(name);
        var dll = package.Locate();
        var sentences = Sentences();
        using var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), dll, new BertSentenceEncoder.Options { Normalize = false, BatchSize = 16 });
        Assert.Equal(package.Pooling, encoder.Pooling);
        Assert.Equal(384, encoder.Dimension);
        Assert.Equal(6, encoder.Config.NumLayers);
        var ours = encoder.Embed(sentences);

        var (_, model) = EmbeddedResources.ReadBySuffix(dll, "model.onnx");
        using var session = new InferenceSession(model);
        double worst = 0;
        string worstText = "";
        // Same padded batches as ours, so the reference also sees padding and the mask.
        for (int start = 0; start < sentences.Count; start += 16)
        {
            var batch = sentences.Skip(start).Take(16).Select(encoder.Tokenize).ToArray();
            var reference = OnnxPooled(session, batch, package.Pooling);
            for (int i = 0; i < batch.Length; i++)
                for (int d = 0; d < 384; d++)
                {
                    double diff = Math.Abs(reference[i][d] - ours[start + i][d]);
                    if (diff > worst) { worst = diff; worstText = sentences[start + i]; }
                }
        }
        output.WriteLine($"{name}: {sentences.Count} sentences, max |ours - ONNX Runtime| = {worst:E2}");
        Assert.True(worst <= 1e-4, $"{name}: max |ours - ONNX Runtime| = {worst:E2} on '{worstText}' (allowed 1e-4)");
        // The embeddings must say something: distinct sentences, distinct vectors.
        Assert.True(CosineDistance(ours[0], ours[1]) > 1e-3, "the first two sentences embed to the same vector");
    }

    /// <summary>
    /// Sentence pairs (store keys of MRPC, RTE, CB, BoolQ) as Hugging Face encodes them: ONNX Runtime is given token type
    /// 1 for the second text, as sentence-transformers passes the tokenizer's token_type_ids; both our encoders must
    /// match it, and must differ from the same pairs with every type 0 (what this library gave before 2026-12-06).
    /// </summary>
    [SharedDataFact]
    public void MiniLMSentencePairsMatchOnnxRuntimeWithHuggingFaceTokenTypes()
    {
        var package = PretrainedEncoderPackage.MiniLM;
        var dll = package.Locate();
        var sentences = Sentences().Take(33).ToList();
        var pairs = Enumerable.Range(0, 32).Select(i => (sentences[i], (string?)sentences[i + 1])).ToList();
        using var torchEncoder = BertSentenceEncoder.Load(new MLContext(seed: 1), dll, new BertSentenceEncoder.Options { Normalize = false, BatchSize = 16 });
        var managedEncoder = ManagedBertSentenceEncoder.Load(dll, new ManagedBertSentenceEncoder.Options { Normalize = false });
        var torch = new float[pairs.Count * 384];
        var managed = new float[pairs.Count * 384];
        torchEncoder.Encode(pairs, torch);
        managedEncoder.Encode(pairs, managed);

        var (_, model) = EmbeddedResources.ReadBySuffix(dll, "model.onnx");
        using var session = new InferenceSession(model);
        var tokens = pairs.Select(p => managedEncoder.Tokenize(p.Item1, p.Item2)).ToArray();
        int sep = managedEncoder.Vocabulary.SepId;
        var withTypes = OnnxPooled(session, tokens, package.Pooling, ids => Array.IndexOf(ids, sep) + 1);
        var allZero = OnnxPooled(session, tokens, package.Pooling, ids => ids.Length);
        double worst = 0, zeroGap = double.MaxValue;
        for (int i = 0; i < pairs.Count; i++)
        {
            for (int d = 0; d < 384; d++)
                worst = Math.Max(worst, Math.Max(Math.Abs(withTypes[i][d] - torch[i * 384 + d]), Math.Abs(withTypes[i][d] - managed[i * 384 + d])));
            zeroGap = Math.Min(zeroGap, withTypes[i].Zip(allZero[i], (a, b) => (double)Math.Abs(a - b)).Max());
        }
        output.WriteLine($"MiniLM pairs: max |ours - ONNX Runtime (HF token types)| = {worst:E2}; smallest max |types 0/1 - all 0| over pairs = {zeroGap:E2}");
        Assert.True(worst <= 1e-4, $"MiniLM pairs: max |ours - ONNX Runtime| = {worst:E2} (allowed 1e-4)");
        Assert.True(zeroGap > 1e-3, $"token type 1 changes a pair's embedding by only {zeroGap:E2}: the check cannot tell the conventions apart");
    }

    [SharedDataFact]
    public void PackageVocabularyIsBertUncasedAndReproducesTokenizerGoldens()
    {
        var folder = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        var reference = File.ReadAllLines(Path.Combine(folder, "vocab.txt"));
        using var golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "golden.json")));
        foreach (var package in PretrainedEncoderPackage.Known)
        {
            var (_, bytes) = EmbeddedResources.ReadBySuffix(package.Locate(), "vocab.txt");
            Assert.Contains((byte)'\r', bytes); // the resource has CRLF endings; none may survive into a token
            var tokens = EmbeddedResources.ReadLines(bytes);
            Assert.Equal(30522, tokens.Count);
            for (int i = 0; i < tokens.Count; i++)
                Assert.True(tokens[i] == reference[i], $"{package.PackageId} vocab.txt line {i + 1}: expected '{reference[i]}', found '{tokens[i]}'");

            var vocabulary = Text.WordPieceVocabulary.FromTokens(tokens, lowerCase: true, package.PackageId);
            int cases = 0;
            foreach (var c in golden.RootElement.GetProperty("cases").EnumerateArray())
            {
                var text = c.GetProperty("text").GetString()!;
                var expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
                var actual = vocabulary.Encode(text).ToArray();
                Assert.True(expected.SequenceEqual(actual), $"{package.PackageId} '{text}': expected [{string.Join(",", expected)}], got [{string.Join(",", actual)}]");
                cases++;
            }
            Assert.Equal(46, cases);
        }
    }

    /// <summary>Pooled last hidden states from ONNX Runtime; token type 1 from <paramref name="secondSegmentStart"/>(row) on (default: none).</summary>
    internal static float[][] OnnxPooled(InferenceSession session, int[][] batch, BertPooling pooling, Func<int[], int>? secondSegmentStart = null)
    {
        int b = batch.Length, t = batch.Max(s => s.Length);
        var ids = new long[b * t];
        var mask = new long[b * t];
        var types = new long[b * t];
        for (int i = 0; i < b; i++)
        {
            int second = secondSegmentStart?.Invoke(batch[i]) ?? int.MaxValue;
            for (int j = 0; j < batch[i].Length; j++) { ids[i * t + j] = batch[i][j]; mask[i * t + j] = 1; types[i * t + j] = j >= second ? 1 : 0; }
        }
        long[] shape = [b, t];
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, shape);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, shape);
        using var typesValue = OrtValue.CreateTensorValueFromMemory(types, shape);
        using var options = new RunOptions();
        using var outputs = session.Run(options,
            new Dictionary<string, OrtValue> { ["input_ids"] = idsValue, ["attention_mask"] = maskValue, ["token_type_ids"] = typesValue },
            ["last_hidden_state"]);
        var hidden = outputs[0].GetTensorDataAsSpan<float>();
        int h = hidden.Length / (b * t);
        var pooled = new float[b][];
        for (int i = 0; i < b; i++)
        {
            var sum = new double[h];
            int n = pooling == BertPooling.Cls ? 1 : batch[i].Length;
            for (int j = 0; j < n; j++)
                for (int d = 0; d < h; d++) sum[d] += hidden[(i * t + j) * h + d];
            pooled[i] = sum.Select(x => (float)(x / n)).ToArray();
        }
        return pooled;
    }

    internal static double CosineDistance(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
        return 1 - dot / Math.Sqrt(na * nb);
    }
}
