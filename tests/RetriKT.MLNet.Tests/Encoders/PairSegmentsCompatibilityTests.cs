using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// Pretrained BERT encoders give a sentence pair's second text token type 1 since 2026-12-06 (Hugging Face's encoding;
/// before, every type was 0). A model.zip saved before keeps the embeddings it was trained and keyed with. The fixtures
/// were written by commit fd70c20, the code before the change, from a tiny BERT it pretrained (60 steps on movie reviews;
/// 2 layers, 48 wide, 2 token types) and MRPC's 16-shot seed-13 pairs, with the outputs that code gave
/// (Encoders/Fixtures/README.md).
/// </summary>
public class PairSegmentsCompatibilityTests
{
    private sealed class PairRow
    {
        public string Text { get; set; } = "";
        public string Text2 { get; set; } = "";
    }

    private static string Fixture(string folder, string name) => Path.Combine(AppContext.BaseDirectory, folder, "Fixtures", name);

    private static List<(string Text, string Text2, float[] Values)> Recorded(string path)
        => File.ReadAllLines(path).Select(l => l.Split('\t'))
            .Select(p => (p[0], p[1], p[2].Split(' ').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray())).ToList();

    private static List<float[]> Embed(MLContext ml, ITransformer model, IEnumerable<(string Text, string Text2, float[] Values)> rows)
        => model.Transform(ml.Data.LoadFromEnumerable(rows.Select(r => new PairRow { Text = r.Text, Text2 = r.Text2 })))
            .GetColumn<float[]>("Features").ToList();

    [Fact]
    public void ASentenceEmbeddingSavedBeforeTokenTypesKeepsItsPairEmbeddings_ANewOneUsesHuggingFaces()
    {
        var ml = new MLContext(seed: 1);
        var recorded = Recorded(Fixture("Encoders", "sentence-embedding-v10001.tsv"));
        var old = (SentenceEmbeddingTransformer)ml.Model.Load(Fixture("Encoders", "sentence-embedding-v10001.zip"), out _);
        Assert.Equal(PairSegments.AllZero, old.Encoder.Parts.Segments);
        var embedded = Embed(ml, old, recorded);
        for (int i = 0; i < recorded.Count; i++)
            Assert.True(recorded[i].Values.SequenceEqual(embedded[i]), $"pair {i}: the saved model no longer gives the embedding it was saved with");

        // Saved again by this code, it still reads pairs with every type 0 (the convention is written now).
        using var temp = new TempDir("retrikt-pair-segments-");
        var resaved = Path.Combine(temp.Path, "model.zip");
        ml.Model.Save(old, null, resaved);
        var reloaded = (SentenceEmbeddingTransformer)ml.Model.Load(resaved, out _);
        Assert.Equal(PairSegments.AllZero, reloaded.Encoder.Parts.Segments);
        Assert.Equal(old.Encoder.Fingerprint, reloaded.Encoder.Fingerprint);
        Assert.True(recorded[0].Values.SequenceEqual(Embed(ml, reloaded, recorded.Take(1))[0]));

        // The same weights read now: Hugging Face's token types, other pair embeddings, another fingerprint, kept through
        // a save and a load.
        var current = new SentenceEmbeddingTransformer(ml, ManagedBertSentenceEncoder.FromParts(old.Encoder.Parts with { Segments = PairSegments.SecondTextOne },
            old.Encoder.Normalize, old.Encoder.MaxTokens), "Features", "Text", "Text2");
        Assert.NotEqual(old.Encoder.Fingerprint, current.Encoder.Fingerprint);
        var now = Embed(ml, current, recorded);
        for (int i = 0; i < recorded.Count; i++)
            Assert.True(BertEncoderParityTests.CosineDistance(recorded[i].Values, now[i]) > 1e-4, $"pair {i}: token type 1 did not change its embedding");
        var currentPath = Path.Combine(temp.Path, "current.zip");
        ml.Model.Save(current, null, currentPath);
        var currentLoaded = (SentenceEmbeddingTransformer)ml.Model.Load(currentPath, out _);
        Assert.Equal(PairSegments.SecondTextOne, currentLoaded.Encoder.Parts.Segments);
        Assert.Equal(current.Encoder.Fingerprint, currentLoaded.Encoder.Fingerprint);
        Assert.True(now[0].SequenceEqual(Embed(ml, currentLoaded, recorded.Take(1))[0]));
    }

    [Fact]
    public void AStudentOnABackboneSavedBeforeTokenTypesPredictsTheScoresItWasSavedWith()
    {
        var ml = new MLContext(seed: 1);
        var recorded = Recorded(Fixture("Student", "backbone-student-v10003.scores.tsv"));
        using var old = (RetrievalClassifierTransformer)ml.Model.Load(Fixture("Student", "backbone-student-v10003.zip"), out _);
        Assert.Equal(PairSegments.AllZero, old.Model.Backbone!.Segments);
        foreach (var (text, text2, expected) in recorded)
            Assert.Equal(expected, old.Predict(text, text2).Scores);

        using var temp = new TempDir("retrikt-pair-segments-");
        var resaved = Path.Combine(temp.Path, "model.zip");
        ml.Model.Save(old, null, resaved);
        using var reloaded = (RetrievalClassifierTransformer)ml.Model.Load(resaved, out _);
        Assert.Equal(PairSegments.AllZero, reloaded.Model.Backbone!.Segments);
        Assert.Equal(old.Model.EncoderFingerprint, reloaded.Model.EncoderFingerprint);
        Assert.Equal(recorded[0].Values, reloaded.Predict(recorded[0].Text, recorded[0].Text2).Scores);

        // The backbone's own embedding of a pair under either convention: the fixture's backbone has two token types,
        // so the old students really depend on the convention they restore.
        var backbone = old.Model.Backbone!;
        Assert.Equal(old.Vocabulary.SepId, backbone.SepId);
        var now = new StudentBackbone(backbone.Weights, backbone.Pooling, backbone.Description, backbone.SepId, PairSegments.SecondTextOne);
        var ids = old.Model.Tokenize(recorded[0].Text, recorded[0].Text2, out _);
        var before = new float[backbone.Dimension];
        var after = new float[backbone.Dimension];
        backbone.Embed(ids, before);
        now.Embed(ids, after);
        Assert.True(BertEncoderParityTests.CosineDistance(before, after) > 1e-4, "token type 1 did not change the backbone's embedding of a pair");
    }
}
