using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// A sentence-pair student's row with an empty second text: <c>Predict</c> and <c>PredictBatch</c> refuse it, while
/// <c>Transform</c> and a PredictionEngine encoded it as <c>[CLS] a [SEP] [SEP]</c>, an input the student never saw, and
/// scored it with confidence (0.97 on the synthetic task).
/// </summary>
public class PairRowWithoutSecondTextTests
{
    private sealed class PairRow
    {
        public string Text { get; set; } = "";
        public string? Text2 { get; set; } = "";
        public string Label { get; set; } = "";
    }

    private static List<PairRow> Pairs(int count, int seed) => RetrievalClassifierBehaviourTests.Synthetic(count, seed)
        .Select((r, i) => new PairRow { Text = RetrievalClassifierBehaviourTests.Synthetic(1, seed * 1000 + i)[0].Text, Text2 = r.Text, Label = r.Label }).ToList();

    private static RetrievalClassifierTransformer Train(MLContext ml)
    {
        var data = ml.Data.LoadFromEnumerable(Pairs(24, 10));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        return ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 24, Epochs = 3, BatchSize = 8, SecondTextColumnName = "Text2", InferenceBatchSize = 4,
        }).Fit(keyMap.Transform(data));
    }

    [Fact]
    public void TransformAndAPredictionEngineRefuseItAsPredictDoes()
    {
        var ml = new MLContext(seed: 1);
        using var student = Train(ml);
        var rows = Pairs(6, 11);
        Assert.Throws<ArgumentException>(() => student.Predict(rows[0].Text, ""));

        rows[5].Text2 = " ";
        var e = Assert.Throws<InvalidOperationException>(() => student.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<float[]>("Score").ToList());
        Assert.Equal("RetrievalClassifier, row 5: this model reads sentence pairs (columns 'Text' and 'Text2'), so it needs a second text; found an empty one.", e.Message);
        // A PredictionEngine scores row by row (the getters a shuffled cursor uses too), and says the same.
        using var engine = ml.Model.CreatePredictionEngine<PairRow, ScoreRow>(student, new PredictionEngineOptions { OwnsTransformer = false });
        e = Assert.Throws<InvalidOperationException>(() => engine.Predict(new PairRow { Text = rows[0].Text, Text2 = null }));
        Assert.EndsWith("this model reads sentence pairs (columns 'Text' and 'Text2'), so it needs a second text; found an empty one.", e.Message);
        // Rows with both texts are scored as before.
        Assert.Equal(student.Predict(rows[0].Text, rows[0].Text2).Scores, engine.Predict(rows[0]).Score);
        var scores = student.Transform(ml.Data.LoadFromEnumerable(rows.Take(5))).GetColumn<float[]>("Score").ToList();
        for (int i = 0; i < 5; i++) Assert.Equal(student.Predict(rows[i].Text, rows[i].Text2).Scores, scores[i]);
    }

    /// <summary>
    /// A second text of only characters the tokenizer drops (a zero-width space, a NUL, U+FFFD) encodes as an empty one,
    /// [CLS] a [SEP] [SEP]; the refusal tested whitespace only, so such a row was scored with the empty second text's
    /// scores by Predict, Transform and a PredictionEngine alike, where the web API answered it with a 400.
    /// </summary>
    [Fact]
    public void ASecondTextOfOnlyCharactersTheTokenizerDropsIsRefusedAsAnEmptyOne()
    {
        var ml = new MLContext(seed: 1);
        using var student = Train(ml);
        var rows = Pairs(6, 11);
        const string Found = "this model reads sentence pairs (columns 'Text' and 'Text2'), so it needs a second text; found one of only whitespace, " +
                             "control, zero-width or private-use characters and combining marks, which encodes as an empty one.";
        foreach (var invisible in new[] { "\u200B", "\0", "\uFFFD", " \u200D\t", "\u0301\u0308" })
        {
            var predict = Assert.Throws<ArgumentException>(() => student.Predict(rows[0].Text, invisible));
            Assert.Equal($"text2: {Found} (Parameter 'text2')", predict.Message);
            Assert.Throws<ArgumentException>(() => student.PredictBatch([rows[0].Text], [invisible]));
        }
        rows[4].Text2 = "\u200B";
        var e = Assert.Throws<InvalidOperationException>(() => student.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<float[]>("Score").ToList());
        Assert.Equal($"RetrievalClassifier, row 4: {Found}", e.Message);
        using var engine = ml.Model.CreatePredictionEngine<PairRow, ScoreRow>(student, new PredictionEngineOptions { OwnsTransformer = false });
        e = Assert.Throws<InvalidOperationException>(() => engine.Predict(rows[4]));
        Assert.EndsWith(Found, e.Message);
        // A second text with a word among such characters is read as that word.
        Assert.Equal(student.Predict(rows[0].Text, "great").Scores, student.Predict(rows[0].Text, "\u200Bgreat\0").Scores);
    }

    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = [];
    }
}
