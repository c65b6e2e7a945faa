using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// BERT basic tokenization on inputs the 46 published goldens do not hold. Expected ids are what Hugging Face's BERT
/// tokenizer gives over bert-base-uncased's vocab.txt (fast: BertNormalizer + BertPreTokenizer; slow: BasicTokenizer),
/// derived by hand from their rules and checked with an independent re-implementation that reproduces all 46 goldens.
/// </summary>
public class BertPreTokenizerEdgeTests
{
    private static WordPieceVocabulary Vocabulary()
        => WordPieceVocabulary.Load(Path.Combine(SharedData.Path("models", "bert-uncased-tokenizer-golden"), "vocab.txt"));

    /// <summary>
    /// U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (categories Zl, Zp) are whitespace to both reference
    /// tokenizers: the fast one maps char::is_whitespace to a space, the slow one splits with str.split(). Taken as a
    /// letter, the two words around one became a single [UNK] (text pasted from JSON or a web page holds them).
    /// </summary>
    [SharedDataTheory]
    [InlineData("hello\u2028world")]
    [InlineData("hello\u2029world")]
    public void LineAndParagraphSeparatorsSplitWordsAsTheReference(string text)
    {
        var vocabulary = Vocabulary();
        Assert.Equal(vocabulary.Encode("hello world"), vocabulary.Encode(text)); // [7592, 2088]
        Assert.Equal([7592, 2088], vocabulary.Encode(text));
    }

    /// <summary>
    /// Accent stripping removes every nonspacing mark (Mn) after NFD, also those outside the Basic Multilingual Plane:
    /// U+E0100 (a variation selector of an ideographic variation sequence, in Japanese names) and U+1D167 (a musical
    /// combining mark) are Mn. Stripped one UTF-16 unit at a time, their surrogate halves were kept, and the word
    /// holding one became [UNK] ('高' + U+E0100 + '橋' gave [高, [UNK], 橋], where the reference gives [高, 橋]).
    /// </summary>
    [SharedDataTheory]
    [InlineData("\u9AD8\U000E0100\u6A4B", "\u9AD8\u6A4B")]
    [InlineData("cafe\U000E0100", "cafe")]
    [InlineData("x\U0001D167y", "xy")]
    public void NonspacingMarksOutsideTheBmpAreStrippedAsTheReference(string text, string stripped)
    {
        var vocabulary = Vocabulary();
        Assert.DoesNotContain(vocabulary.UnknownId, vocabulary.Encode(stripped));
        Assert.Equal(vocabulary.Encode(stripped), vocabulary.Encode(text));
    }

    /// <summary>
    /// <c>HasWordCharacter</c> is what a service (the web API, a pair student's second text) refuses empty input by: it
    /// must be false exactly where the uncased tokenizer reads nothing. Nonspacing marks (U+0301, 2,020 code points in
    /// all) were taken as word characters, while lower-casing strips every one, so a text of only combining marks passed
    /// as text and was answered as an empty one.
    /// </summary>
    [SharedDataFact]
    public void HasWordCharacterIsFalseExactlyWhereTheUncasedTokenizerReadsNothing()
    {
        var vocabulary = Vocabulary();
        var disagree = new List<string>();
        for (int cp = 1; cp <= 0x10FFFF; cp++)
        {
            if (cp is >= 0xD800 and <= 0xDFFF) continue;
            var text = char.ConvertFromUtf32(cp);
            if (TextTokenizingTransformer.HasWordCharacter(text) != vocabulary.Encode(text).Count > 0 && disagree.Count < 5) disagree.Add($"U+{cp:X4}");
        }
        Assert.Empty(disagree);
        Assert.False(TextTokenizingTransformer.HasWordCharacter("\u0301\u0308 \u200B"));
        Assert.True(TextTokenizingTransformer.HasWordCharacter("e\u0301"));
    }
}
