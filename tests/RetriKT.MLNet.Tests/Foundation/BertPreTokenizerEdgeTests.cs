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
}
