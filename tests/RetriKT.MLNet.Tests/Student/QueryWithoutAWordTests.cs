using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// A query whose text the tokenizer reads as empty ("", whitespace, a zero-width space, a NUL, a lone combining mark)
/// was answered by Predict, Explain, PredictBatch, Transform and a PredictionEngine with the scores of [CLS] [SEP]
/// (a label and a score vector like any other), though the trainer skips such rows and the web API
/// refuses them; every entry point now refuses it in one line naming the column (and the row) and what the text holds.
/// </summary>
public class QueryWithoutAWordTests
{
    private sealed class Query
    {
        public string Text { get; set; } = "";
    }

    private sealed class ScoreRow
    {
        public float[] Score { get; set; } = [];
    }

    [Fact]
    public void EveryEntryPointRefusesATextTheTokenizerReadsAsEmpty()
    {
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 2, BatchSize = 8, InferenceBatchSize = 4,
        }).Fit(keyMap.Transform(train));
        using var engine = ml.Model.CreatePredictionEngine<Query, ScoreRow>(student, new PredictionEngineOptions { OwnsTransformer = false });
        const string Word = "a wonderful , moving film .";
        foreach (var (text, found) in new[]
                 {
                     ("", "an empty one"), (" \t", "an empty one"),
                     ("\u200B", "one of only whitespace, control, zero-width or private-use characters and combining marks, which encodes as an empty one"),
                     ("\0\u0301", "one of only whitespace, control, zero-width or private-use characters and combining marks, which encodes as an empty one"),
                 })
        {
            string expected = $"this model reads column 'Text', so it needs a text; found {found}.";
            Assert.Equal($"text: {expected} (Parameter 'text')", Assert.Throws<ArgumentException>(() => student.Predict(text)).Message);
            Assert.Equal($"text: {expected} (Parameter 'text')", Assert.Throws<ArgumentException>(() => student.Explain(text)).Message);
            Assert.Equal($"texts[1]: {expected} (Parameter 'texts[1]')", Assert.Throws<ArgumentException>(() => student.PredictBatch([Word, text])).Message);
            var rows = ml.Data.LoadFromEnumerable(new[] { new Query { Text = Word }, new Query { Text = Word }, new Query { Text = text } });
            var transform = Assert.Throws<InvalidOperationException>(() => student.Transform(rows).GetColumn<float[]>("Score").ToList());
            Assert.Equal($"RetrievalClassifier, row 2: {expected}", transform.Message);
            Assert.EndsWith(expected, Assert.Throws<InvalidOperationException>(() => engine.Predict(new Query { Text = text })).Message);
        }
        // A text with a word among such characters is read as that word, and answered alike by every entry point.
        var scores = student.Predict(Word).Scores;
        Assert.Equal(scores, student.Predict("\u200B" + Word + "\0").Scores);
        Assert.Equal(scores, engine.Predict(new Query { Text = Word }).Score);
        Assert.Equal(scores, student.PredictBatch([Word])[0]);
    }
}
