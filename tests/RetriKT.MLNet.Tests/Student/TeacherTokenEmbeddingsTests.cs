using Microsoft.ML;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// The tiny student started from a teacher's vocabulary and token embeddings (TeacherTokenVocabulary, factored
/// embeddings), on the real stories260K teacher and SST-2 rows.
/// </summary>
public sealed class TeacherTokenEmbeddingsTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-teacher-vocab-");
    private string Temp => _folder.Path;

    public void Dispose() => _folder.Dispose();

    private static TeacherModel Stories() => TeacherModel.Load(SharedData.Path("models", "llama2c-stories260K", "stories260K.bin"));

    /// <summary>
    /// The export writes a temporary folder beside the target and moves it there; a failure (here the move, onto a file
    /// of that name) left the temporary folder with the teacher's vocabulary and embeddings behind, one per try.
    /// </summary>
    [SharedDataFact]
    public void AFailedExportLeavesNoTemporaryFolderBehind()
    {
        using var teacher = Stories();
        var target = Path.Combine(Temp, "taken");
        File.WriteAllText(target, "a file where the export's folder would go");
        Assert.ThrowsAny<IOException>(() => TeacherTokenVocabulary.Export(teacher, target));
        Assert.Equal([target], Directory.GetFileSystemEntries(Temp));
        Assert.Equal("a file where the export's folder would go", File.ReadAllText(target));
    }

    [SharedDataFact]
    public void ExportTurnsTheTeachersTokensIntoWordPiecesWithTheirEmbeddings()
    {
        using var teacher = Stories();
        var folder = Path.Combine(Temp, "stories");
        var files = TeacherTokenVocabulary.Export(teacher, folder);

        var tokens = File.ReadAllLines(files.VocabularyPath);
        Assert.Equal(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], tokens[..5]);
        Assert.Equal(tokens.Length, files.Count);
        Assert.Equal(tokens.Length, tokens.Distinct(StringComparer.Ordinal).Count());
        Assert.Contains("the", tokens);
        Assert.Contains(tokens, t => t.StartsWith("##", StringComparison.Ordinal) && t.Length > 3);
        Assert.DoesNotContain(tokens[5..], t => t.Any(char.IsWhiteSpace) || t.Any(char.IsUpper));
        // Every letter can start and continue a word, so no lower-case word is [UNK].
        foreach (var c in "abcdefghijklmnopqrstuvwxyz")
        {
            Assert.Contains(c.ToString(), tokens);
            Assert.Contains("##" + c, tokens);
        }

        // "the" holds the mean of the teacher's vectors of the tokens that start a word with it (" the", " The", …).
        var (vectors, width) = TeacherTokenVocabulary.ReadEmbeddings(files.EmbeddingsPath);
        Assert.Equal(teacher.Config.HiddenSize, width);
        // Decoded after another token: a SentencePiece decoder drops the leading space of a text's first token.
        var tokenizer = teacher.Tokenizer!;
        int anchor = tokenizer.Encode("a")[^1];
        var ids = Enumerable.Range(0, teacher.Config.VocabSize)
            .Where(id => id != tokenizer.BosId && id != tokenizer.EosId
                         && tokenizer.Decode([anchor, id]) is ['a', ' ', .. var rest] && rest.ToLowerInvariant() == "the").ToArray();
        Assert.NotEmpty(ids);
        float[] expected;
        using (var scope = NewDisposeScope())
        using (no_grad())
            expected = teacher.Embed(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0)).squeeze(0).mean([0L]).data<float>().ToArray();
        int row = Array.IndexOf(tokens, "the");
        var actual = vectors.AsSpan(row * width, width).ToArray();
        Assert.Equal(expected.Length, actual.Length);
        for (int j = 0; j < width; j++) Assert.Equal(expected[j], actual[j], 1e-5);

        // Two exports racing into one folder (two harness lanes) both end with the same complete export, no leftovers.
        var raced = Path.Combine(Temp, "raced");
        var both = new[] { Task.Run(() => TeacherTokenVocabulary.Export(teacher, raced)), Task.Run(() => TeacherTokenVocabulary.Export(teacher, raced)) };
        Task.WaitAll(both);
        Assert.Equal(both[0].Result, both[1].Result);
        Assert.Equal(tokens, File.ReadAllLines(both[0].Result.VocabularyPath));
        Assert.Empty(Directory.GetDirectories(Temp, "raced.tmp-*"));

        // A second export of the same teacher reuses the folder; another teacher's export there fails naming both.
        Assert.Equal(files, TeacherTokenVocabulary.Export(teacher, folder));
        using var other = TeacherModel.Load(SharedData.Path("models", "hf-tiny-random-gpt2"));
        var error = Assert.Throws<InvalidDataException>(() => TeacherTokenVocabulary.Export(other, folder));
        Assert.Contains(teacher.ContentHash, error.Message);
        Assert.Contains(other.ContentHash, error.Message);
    }

    [SharedDataFact]
    public void StudentOnFactoredTeacherEmbeddingsRoundTripsThroughModelZip()
    {
        using var teacher = Stories();
        var files = TeacherTokenVocabulary.Export(teacher, Path.Combine(Temp, "stories"));
        var ml = new MLContext(seed: 1);
        var rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv"));
        const int rank = 8, hidden = 32, maxLength = 48;
        var options = new RetrievalClassifierTrainer.Options
        {
            VocabularyPath = files.VocabularyPath, TokenEmbeddingsPath = files.EmbeddingsPath, EmbeddingRank = rank,
            HiddenSize = hidden, Heads = 2, MaxLength = maxLength, Epochs = 2, RetrievalWeight = 0.5,
        };
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.RetrievalClassifier(options))
            .Fit(ml.Data.LoadFromEnumerable(rows));
        var student = model.LastTransformer;
        try
        {
            // The factored table is what the student holds and counts: V·r + r·H, not V·H.
            Assert.Equal((long)files.Count * rank + rank * hidden + (maxLength + 2L) * hidden, student.EmbeddingParameterCount);

            var path = Path.Combine(Temp, "model.zip");
            ml.Model.Save(model, ml.Data.LoadFromEnumerable(rows).Schema, path);
            var loaded = ml.Model.Load(path, out _);
            var reloaded = ((IEnumerable<ITransformer>)loaded).OfType<RetrievalClassifierTransformer>().Single();
            try
            {
                Assert.Equal(student.ParameterCount, reloaded.ParameterCount);
                foreach (var text in new[] { "a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ." })
                    Assert.Equal(student.Predict(text).Scores, reloaded.Predict(text).Scores);
            }
            finally
            {
                reloaded.Dispose();
            }
        }
        finally
        {
            student.Dispose();
        }
    }

    [SharedDataFact]
    public void TokenEmbeddingsThatDoNotFitTheVocabularyFailNamingTheFile()
    {
        using var teacher = Stories();
        var files = TeacherTokenVocabulary.Export(teacher, Path.Combine(Temp, "stories"));
        var ml = new MLContext(seed: 1);
        var data = ml.Transforms.Conversion.MapValueToKey("Label").Fit(TestData.Sst2Train(ml)).Transform(TestData.Sst2Train(ml));

        var noVocabulary = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { TokenEmbeddingsPath = files.EmbeddingsPath }));
        Assert.Contains("needs VocabularyPath", noVocabulary.Message);

        // A vocabulary one token short of the vectors: the file and both counts are named.
        var shortVocabulary = Path.Combine(Temp, "short-vocab.txt");
        File.WriteAllLines(shortVocabulary, File.ReadAllLines(files.VocabularyPath)[..^1]);
        var mismatch = Assert.Throws<InvalidDataException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            VocabularyPath = shortVocabulary, TokenEmbeddingsPath = files.EmbeddingsPath, EmbeddingRank = 8, Epochs = 1,
        }).Fit(data));
        Assert.Contains(files.EmbeddingsPath, mismatch.Message);
        Assert.Contains($"expected {files.Count - 1} token vectors", mismatch.Message);

        // Vectors wider than the student without a rank to factor them.
        var unfactored = Assert.Throws<InvalidDataException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            VocabularyPath = files.VocabularyPath, TokenEmbeddingsPath = files.EmbeddingsPath, HiddenSize = 48, Heads = 4, Epochs = 1,
        }).Fit(data));
        Assert.Contains("set EmbeddingRank", unfactored.Message);

        // A rank above the hidden size: refused when the options are given, not deep in the SVD start.
        var tooWide = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            VocabularyPath = files.VocabularyPath, TokenEmbeddingsPath = files.EmbeddingsPath, EmbeddingRank = 16, HiddenSize = 12, Heads = 4, Epochs = 1,
        }));
        Assert.Contains("EmbeddingRank (16) must be at most HiddenSize (12)", tooWide.Message);
    }
}
