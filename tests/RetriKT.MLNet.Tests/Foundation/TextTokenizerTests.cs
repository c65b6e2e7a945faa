using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Text;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Foundation;

public class TextTokenizerTests
{
    [SharedDataFact]
    public void BertVocabularyReproducesPublishedTokenizationGoldens()
    {
        var folder = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        var vocabulary = WordPieceVocabulary.Load(Path.Combine(folder, "vocab.txt"));
        Assert.Equal(30522, vocabulary.Count);
        using var golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "golden.json")));
        int checkedCases = 0;
        foreach (var c in golden.RootElement.GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var actual = vocabulary.Encode(text).ToArray();
            Assert.True(expected.SequenceEqual(actual), $"'{text}': expected [{string.Join(",", expected)}], got [{string.Join(",", actual)}]");
            checkedCases++;
        }
        Assert.Equal(46, checkedCases);
    }

    [SharedDataFact]
    public void FittedOnRealFewShotTextsItEncodesWithSpecialTokensAndTruncates()
    {
        var mlContext = new MLContext(seed: 1);
        var data = TestData.Sst2Train(mlContext);
        var model = mlContext.RetriKT().TextTokenizer(maxLength: 8).Fit(data);
        Assert.True(model.Vocabulary.Count > 100, $"vocabulary of {model.Vocabulary.Count} tokens");

        var ids = model.Encode("the movie is good");
        var tok = model.Vocabulary;
        Assert.Equal(tok.ClsId, ids[0]);
        Assert.Equal(tok.SepId, ids[^1]);
        Assert.DoesNotContain(tok.UnknownId, ids);

        var longIds = model.Encode("a long sentence that certainly has more than eight word pieces in it");
        Assert.Equal(8, longIds.Length);
        Assert.Equal(tok.SepId, longIds[^1]);

        var pair = model.Encode("first part here", "second");
        Assert.Equal(2, pair.Count(i => i == tok.SepId));
        Assert.True(pair.Length <= 8);
    }

    [Fact]
    public void BadInputIsRejectedNamingTheProblem()
    {
        var mlContext = new MLContext();
        var numbers = mlContext.Data.LoadFromEnumerable(new[] { new { Text = 1.0f } });
        var wrongType = Assert.Throws<ArgumentOutOfRangeException>(() => mlContext.RetriKT().TextTokenizer().Fit(numbers));
        Assert.Contains("'Text' must be String", wrongType.Message);

        var texts = mlContext.Data.LoadFromEnumerable(new[] { new TextRow { Text = "hello" } });
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => mlContext.RetriKT().TextTokenizer(inputColumnName: "Sentence").Fit(texts));
        Assert.Contains("'Sentence' not found", missing.Message);

        Assert.Throws<ArgumentOutOfRangeException>(() => mlContext.RetriKT().TextTokenizer(maxLength: 2));

        var noUnk = Assert.Throws<InvalidDataException>(() => WordPieceVocabulary.FromTokens(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "a"], true));
        Assert.Contains("'[UNK]' is missing", noUnk.Message);
        var duplicate = Assert.Throws<InvalidDataException>(() => WordPieceVocabulary.FromTokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "a"], true));
        Assert.Contains("lines 6 and 7", duplicate.Message);
        Assert.Throws<FileNotFoundException>(() => WordPieceVocabulary.Load("/nonexistent/vocab.txt"));
    }

    /// <summary>
    /// With a second text column, MaxLength 3 left room for no token of either text ([CLS] [SEP] [SEP] for every pair)
    /// and 4 for one token of the second text only, so every MRPC pair, or every pair with the same second text,
    /// encoded alike without a word; such a MaxLength is now refused when the estimator is made, naming the minimum.
    /// </summary>
    private sealed class PairRow
    {
        public string Text { get; set; } = "";
        public string Text2 { get; set; } = "";
    }

    [SharedDataFact]
    public void APairTokenizerWithNoRoomForATokenOfEachTextIsRefused()
    {
        var mlContext = new MLContext(seed: 1);
        var pairs = FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13).Train.Select(r => new PairRow { Text = r.Text, Text2 = r.Text2! }).ToList();
        var data = mlContext.Data.LoadFromEnumerable(pairs);
        TextTokenizingEstimator Pairs(int maxLength) => mlContext.RetriKT().TextTokenizer(new TextTokenizingEstimator.Options
        {
            InputColumnName = "Text", SecondInputColumnName = "Text2", MaxLength = maxLength,
        });
        foreach (int tooShort in new[] { 3, 4 })
            Assert.Equal($"MaxLength must be at least 5 for sentence pairs (room for [CLS], a token of each text and two [SEP]), found {tooShort}. (Parameter 'options')",
                Assert.Throws<ArgumentOutOfRangeException>(() => Pairs(tooShort)).Message);

        var shortest = Pairs(5).Fit(data);
        var encoded = pairs.Select(p => shortest.Encode(p.Text, p.Text2)).ToList();
        Assert.All(encoded, ids => Assert.Equal(5, ids.Length));
        Assert.True(encoded.Select(ids => string.Join(" ", ids)).Distinct().Count() > 1);
        Assert.Equal(3, mlContext.RetriKT().TextTokenizer(maxLength: 3).Fit(data).Encode(pairs[0].Text).Length); // one text: 3 is enough
    }

    /// <summary>
    /// A package DLL has no tokenizer_config.json, so an unknown one's casing is read off its vocabulary: bert-base-uncased's
    /// holds no token that lower-casing changes, a cased vocabulary (here the same words also spelt capitalised, as
    /// bert-base-cased holds "The" beside "the") holds thousands. A few odd tokens do not make a vocabulary cased.
    /// </summary>
    [SharedDataFact]
    public void AVocabularySaysWhetherItsModelIsCased()
    {
        var uncased = File.ReadAllLines(SharedData.Path("models", "bert-base-uncased-vocab", "vocab.txt"));
        Assert.True(WordPieceVocabulary.LooksUncased(uncased));
        var words = uncased.Where(t => t.Length > 1 && t.All(char.IsAsciiLetterLower)).ToList();
        string Capital(string w) => char.ToUpperInvariant(w[0]) + w[1..];
        Assert.False(WordPieceVocabulary.LooksUncased([.. uncased, .. words.Take(3000).Select(Capital)]));
        Assert.True(WordPieceVocabulary.LooksUncased([.. uncased, .. words.Take(100).Select(Capital), "[UNUSED_SPECIAL]"]));
    }
}
