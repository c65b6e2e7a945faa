using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// The tuning corpus's sentence draw on a real corpus (<c>../shared/data/corpora/movie-reviews-polarity-v2</c>, one
/// critic's review per line): deterministic for a seed, distinct, within the word limits, different for another seed,
/// and one clear line for a path that is not there or a corpus too small for the count.
/// </summary>
public class CorpusSentencesTests
{
    private static readonly string Corpus = SharedData.Path("data", "corpora", "movie-reviews-polarity-v2");

    [Fact]
    public void DrawsDistinctSentencesOfTheCorpusWithinTheWordLimitsTheSameWayForASeed()
    {
        var first = CorpusSentences.Draw(Corpus, 300, seed: 13);
        Assert.Equal(300, first.Count);
        Assert.Equal(first, CorpusSentences.Draw(Corpus, 300, seed: 13));
        Assert.Equal(300, first.Distinct(StringComparer.Ordinal).Count());
        var text = string.Join("\n", Directory.GetFiles(Corpus, "*.txt").Select(File.ReadAllText));
        foreach (var sentence in first)
        {
            int words = sentence.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
            Assert.InRange(words, CorpusSentences.MinWords, CorpusSentences.MaxWords);
            Assert.Contains(sentence, text, StringComparison.Ordinal);
        }
        // Most sentences end with their mark, which stays with them (the last one of a review may have none).
        Assert.True(first.Count(s => s[^1] is '.' or '!' or '?') > 250, "sentences lost their end marks");
        var other = CorpusSentences.Draw(Corpus, 300, seed: 21);
        Assert.True(first.Intersect(other).Count() < 30, "another seed draws other sentences");
    }

    [Fact]
    public void AMissingPathOrATooSmallCorpusFailsNamingIt()
    {
        var missing = Path.Combine(Path.GetTempPath(), "retrikt-no-such-corpus");
        var e = Assert.Throws<FileNotFoundException>(() => CorpusSentences.Draw(missing, 10, 1));
        Assert.Equal($"TuningCorpus '{missing}' is neither a file nor a folder.", e.Message);
        using var temp = new TempDir();
        var file = temp.File("retrikt-tuning.txt");
        File.WriteAllText(file, "a film that is worth seeing again . too short . the cast does what it can with a thin script !\n");
        Assert.Equal(2, CorpusSentences.Draw(file, 2, 1).Count);
        var small = Assert.Throws<InvalidDataException>(() => CorpusSentences.Draw(file, 3, 1));
        Assert.Equal($"TuningCorpus '{file}': 2 distinct sentences of 5-40 words, expected at least TuningCorpusRows = 3.", small.Message);
    }

    /// <summary>
    /// A corpus saved in another encoding (here Latin-1's 'é') was read as UTF-8 with every bad byte replaced by U+FFFD,
    /// and those sentences went to the teacher to be labelled and into the student's store as if they were text. The
    /// draw now fails naming the file, the line and the byte.
    /// </summary>
    [Fact]
    public void ACorpusThatIsNotUtf8FailsNamingTheFileAndLine()
    {
        using var temp = new TempDir();
        var file = temp.File("latin1.txt");
        var text = System.Text.Encoding.ASCII;
        File.WriteAllBytes(file, [.. text.GetBytes("the coffee here is good and cheap .\nthe caf"), 0xE9, .. text.GetBytes(" on the corner was full today .\n")]);
        var e = Assert.Throws<InvalidDataException>(() => CorpusSentences.Draw(file, 1, 1, CorpusSentences.StoreOption));
        Assert.Equal($"StoreCorpus '{file}' line 2: expected UTF-8 text, found byte 0xE9; save the text as UTF-8.", e.Message);
        // The same text as UTF-8 is read as it always was.
        File.WriteAllText(file, "the coffee here is good and cheap .\nthe caf\u00e9 on the corner was full today .\n");
        Assert.Contains("the caf\u00e9 on the corner was full today .", CorpusSentences.Draw(file, 2, 1, CorpusSentences.StoreOption));
        // With a byte order mark, as File.ReadLines read it: the mark is not part of the first sentence.
        File.WriteAllText(file, "the coffee here is good and cheap .\nthe caf\u00e9 on the corner was full today .\n", new System.Text.UTF8Encoding(true));
        Assert.Contains("the coffee here is good and cheap .", CorpusSentences.Draw(file, 2, 1, CorpusSentences.StoreOption));
    }
}
